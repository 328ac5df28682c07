"""`promoter rollback MODEL --env ENV [--to-version N]`: move the environment's alias back and
let the normal pipeline open the MR. MLflow stays the source of truth: the alias is what the
job (and every later webhook and reconcile pass) deploys.

So the alias moves only for a rollback the policy allows: the verdict is asked first (the one
`policy check` gives), and if the job is still denied (a gate that changed in between, or the
signature check), the alias is put back; otherwise MLflow would name a version the cluster
does not run, and nothing would repair it."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, check_version, emit_json, state
from promoter.commands.promote import _finish, _Printer, run_promotion
from promoter.errors import EXIT_POLICY, UserError

if TYPE_CHECKING:
    from promoter.settings import Settings


def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="MLflow registered model name")],
    env: Annotated[str, typer.Option("--env", "-e", help="environment from promoter.yaml")],
    to_version: Annotated[str | None, typer.Option(
        "--to-version", help="version to go back to (default: the one live before the "
                             "current one, from the audit trail)", callback=check_version)]
    = None,
    output: str = OUTPUT_OPTION,
) -> None:
    """Roll an environment back to an earlier version: move its MLflow alias, then run the
    promotion job and print each step (exit codes as `promote`)."""
    from promoter.core.live_history import previous_live
    from promoter.service import composition

    settings = state(ctx).settings()
    alias = settings.environment(env).trigger.alias
    if alias is None:
        raise UserError(f"{env} is promoted by a legacy stage, not an alias; rollback moves an "
                        "alias", hint="transition the stage in MLflow instead")
    audit = composition.audit_trail(settings)
    target = to_version or previous_live(audit.entries(), env, model)
    if target is None:
        raise UserError(f"the audit trail has no version of {model!r} that was live in {env} "
                        "before the current one", hint="name one with --to-version N")
    registry = composition.registry(settings)
    registry.model_version(model, target)  # a version that does not exist: refused here
    _refuse_if_denied(settings, model, target, env, output)
    current = registry.current_version(model, alias, None)
    actor = f"cli:{getpass.getuser()}"
    registry.set_alias(model, alias, target)
    audit.record("rollback", actor=actor, model=model, env=env, version=target, previous=current)
    printer = _Printer(output)
    printer.line(f"{env}: alias {alias!r} of {model} moved from version {current} to {target}")
    job = run_promotion(settings, model, target, env, printer, {"reason": "rollback"})
    if (job.get("result") or {}).get("outcome") == "denied":
        # The job deployed nothing: the alias must name what the environment still runs.
        if current is not None:
            registry.set_alias(model, alias, current)
        audit.record("rollback.reverted", actor=actor, model=model, env=env, version=target,
                     restored=current)
        typer.echo(f"{env}: rollback to version {target} denied; alias {alias!r} of {model} "
                   + (f"moved back to version {current}" if current is not None else
                      "left on it (it pointed at no version before); delete it in MLflow"),
                   err=True)
    _finish(job, output)


def _refuse_if_denied(settings: Settings, model: str, version: str, env: str,
                      output: str) -> None:
    """Exit 4 with the policy's reasons, before anything moves, when ``version`` may not go
    (back) to ``env``."""
    from promoter.policy_check import Subject, check_policy

    decision = check_policy(settings, Subject(env=env, model=model, version=version))
    if decision.allowed:
        return
    if output == "json":
        emit_json({"state": "denied", "model": model, "version": version, "env": env,
                   "reasons": decision.reasons})
    else:
        typer.echo(f"rollback of {model} in {env} to version {version} denied by policy "
                   "(the alias was not moved):\n  " + "\n  ".join(decision.reasons))
    raise typer.Exit(EXIT_POLICY)


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
