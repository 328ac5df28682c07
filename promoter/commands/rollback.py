"""`promoter rollback MODEL --env ENV [--to-version N]`: move the environment's alias back and
let the normal pipeline open the MR. MLflow stays the source of truth: the alias is what the
job (and every later webhook and reconcile pass) deploys."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, check_version, state
from promoter.commands.promote import _finish, _Printer, run_promotion
from promoter.errors import UserError


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
    current = registry.current_version(model, alias, None)
    registry.set_alias(model, alias, target)
    audit.record("rollback", actor=f"cli:{getpass.getuser()}", model=model, env=env,
                 version=target, previous=current)
    printer = _Printer(output)
    printer.line(f"{env}: alias {alias!r} of {model} moved from version {current} to {target}")
    _finish(run_promotion(settings, model, target, env, printer, {"reason": "rollback"}), output)


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
