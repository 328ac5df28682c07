"""`promoter rollback MODEL --env ENV [--to-version N]`: move the environment's alias back and
let the normal pipeline open the MR. MLflow stays the source of truth: the alias is what the
job (and every later webhook and reconcile pass) deploys. Back means to a version that ran
there: the target is one the audit trail verified live in the environment (since its last
decommission), as the default target is; any other version is refused (promote it instead).

So the alias moves only for a rollback the policy allows: `policy check`'s answer is asked
first (the verdict, and the pipeline's refusals it makes too: a deployment name another model
owns, a runtime switch under a shared base, a vLLM misfit; exit 1), and if the job deploys
nothing, the alias is put back; otherwise MLflow would name a version the cluster does not
run, and nothing would repair it. The job deploys nothing when it is denied (a gate that
changed in between, or the signature check) and when it is parked dead before its proposal
began: a refusal the check could not make (the target branch changed in between, or could
not be read from here) and permanent image or artifact failures. Dead after that (MLflow
refusing the write-back), an MR for the rollback may be open: the alias stays, naming what
that MR deploys, and the command says so.

The command waits while the job is queued or running. A job left for a retry after a
transient failure (a dependency down) keeps the alias: it is still in the queue, and `promoter
serve` retries it, deploying what the alias names; the command says so and exits 3.

A rollback is always a job of its own, never the answer of one that ran before: the alias may
already name the target because an earlier rollback's MR was closed unmerged, and then the
environment still runs something else, so the version is proposed again (even over a
reviewer's close of that MR: a person asked for it now). Only when the alias names the target
and the environment runs it already (the audit trail's last verified merge) is there nothing
to do: refused, nothing moves."""

from __future__ import annotations

import getpass
import shlex
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from promoter.commands import _not_checked
from promoter.commands._common import OUTPUT_OPTION, check_version, emit_json, state
from promoter.commands.promote import _finish, _Printer, run_promotion
from promoter.core.jobs import PROPOSAL_STARTED, ROLLBACK_REASON, ROLLBACK_TO
from promoter.errors import EXIT_POLICY, UserError

if TYPE_CHECKING:
    from promoter.policy_check import PolicyCheck
    from promoter.settings import Settings


def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="MLflow registered model name")],
    env: Annotated[str, typer.Option("--env", "-e", help="environment from promoter.yaml")],
    to_version: Annotated[str | None, typer.Option(
        "--to-version", help="version to go back to, one that was live in the environment "
                             "(default: the one live before the current one, from the audit "
                             "trail)", callback=check_version)]
    = None,
    output: str = OUTPUT_OPTION,
) -> None:
    """Roll an environment back to an earlier version: move its MLflow alias, then run a new
    promotion job and print each step (exit codes as `promote`). A job denied, or parked dead
    before it began proposing, deployed nothing: the alias is moved back. A job dead after
    that (an MR may be open) or left for a retry keeps it.

    Refused (exit 1, nothing moves) when the version never ran in the environment (--to-version
    must name one the audit trail verified live there; promote any other) and when the alias
    already names it and the environment runs it. The alias naming it while the environment
    runs another (the last rollback's MR was closed unmerged) proposes it again."""
    from promoter.core.live_history import live_versions, previous_live
    from promoter.service import composition

    settings = state(ctx).settings()
    alias = settings.environment(env).trigger.alias
    if alias is None:
        raise UserError(f"{env} is promoted by a legacy stage, not an alias; rollback moves an "
                        "alias", hint="transition the stage in MLflow instead")
    audit = composition.audit_trail(settings)
    # Verified entries only: a merge appended by hand past the trail's first bad line must
    # not make a version a target ("it ran there") nor hide the one that did run.
    entries = audit.verified(list)
    target = to_version or previous_live(entries, env, model)
    history = live_versions(entries, env, model)
    if target is None:
        _refuse_no_earlier(model, env, alias, history,
                           lambda: composition.registry(settings).current_version(
                               model, alias, None))
    _refuse_if_never_live(model, env, alias, target, history)
    registry = composition.registry(settings)
    registry.model_version(model, target)  # a version that does not exist: refused here
    current = registry.current_version(model, alias, None)
    if current == target and history and history[-1] == target:
        earlier = [version for version in _verified(history) if version != target]
        raise UserError(f"{env} already runs version {target} of {model}, and its alias "
                        f"{alias!r} names it: nothing to roll back",
                        hint=f"versions it ran before: {', '.join(earlier)}; name one with "
                             "--to-version N" if earlier else
                             _nothing_earlier(model, env, alias))
    checked = _refuse_if_denied(settings, model, target, env, output)
    actor = f"cli:{getpass.getuser()}"
    moved = current != target
    if moved:
        registry.set_alias(model, alias, target)
    audit.record("rollback", actor=actor, model=model, env=env, version=target, previous=current)
    printer = _Printer(output)
    printer.line(f"{env}: alias {alias!r} of {model} moved from {_named(current)} to {target}"
                 if moved else
                 f"{env}: alias {alias!r} of {model} already names version {target}, but "
                 f"{env} runs {_described(history[-1] if history else None)}: proposing "
                 f"version {target} again")
    # A new job: one that ran before (the last rollback's, its MR closed unmerged) must not
    # answer for it with that run's old MR.
    job, _ = run_promotion(settings, model, target, env, printer,
                           {"reason": ROLLBACK_REASON, ROLLBACK_TO: target}, fresh=True)
    failed = _deployed_nothing(job, _job_steps(settings, job["id"]))
    if failed is not None and not moved:
        typer.echo(f"{env}: rollback to version {target} {failed}; alias {alias!r} of {model} "
                   "left on it, as it was before", err=True)
    elif failed is not None:
        # The alias must name what the environment still runs.
        if current is not None:
            registry.set_alias(model, alias, current)
        audit.record("rollback.reverted", actor=actor, model=model, env=env, version=target,
                     restored=current, job_id=job["id"], job_state=job["state"])
        typer.echo(f"{env}: rollback to version {target} {failed}; alias {alias!r} of {model} "
                   + (f"moved back to version {current}" if current is not None else
                      "left on it (it pointed at no version before); delete it in MLflow"),
                   err=True)
    elif job["state"] == "dead":
        typer.echo(f"{env}: alias {alias!r} of {model} stays on version {target}: job "
                   f"{job['id']} failed after it began proposing, so an MR for version "
                   f"{target} may be open (`promoter mr list`); merge or close it, and move the "
                   "alias to match", err=True)
    elif job["state"] == "retrying":
        typer.echo(f"{env}: alias {alias!r} of {model} stays on version {target}: job "
                   f"{job['id']} is queued for a retry, which deploys it (`promoter serve`)",
                   err=True)
    # A dead job's own retry would deploy what the alias names again, not the rollback.
    again = shlex.join(["promoter", "rollback", model, "--env", env, "--to-version", target])
    _finish(job, output, dead_hint=f"fix the cause, then run `{again}` again",
            json_extra={"not_checked": _not_checked.as_json(checked)})


def _refuse_if_never_live(model: str, env: str, alias: str, target: str,
                          history: list[str | None]) -> None:
    """A rollback goes back to a version that ran in ``env``: one the audit trail verified
    live there (since its last decommission), as the default target is. Anything else (a
    newer version, one only ever live elsewhere) is a promotion, not a rollback."""
    verified = _verified(history)
    if target in verified:
        return
    ran = ", ".join(verified) if verified else "none"
    promote = shlex.join(["promoter", "promote", model, "--version", target, "--env", env])
    raise UserError(
        f"version {target} of {model} was never live in {env} (versions the audit trail "
        f"verified there: {ran}); rollback goes back only to one of those",
        hint=f"to deploy version {target}, promote it: move the {alias!r} alias to it in "
             f"MLflow; its webhook (or `{promote}`) opens the MR")


def _verified(history: list[str | None]) -> list[str]:
    """The versions the audit trail verified live in the environment (live_versions), each
    once, oldest first: the ones a rollback may go back to."""
    return list(dict.fromkeys(version for version in history if version is not None))


def _refuse_no_earlier(model: str, env: str, alias: str, history: list[str | None],
                       current: Callable[[], str | None]) -> NoReturn:
    """No default target: nothing verified ran in ``env`` before what runs now, since it was
    (re)started (first deployed, or deployed again after its last decommission; what ran
    before that is no rollback's to go back to). Only when the alias has moved on from the
    version that runs (its MR not merged) is there something to go back to: that version.
    ``current`` reads what the alias names, asked only when a version runs (a model that
    never ran in ``env`` may not exist in the registry at all)."""
    runs = history[-1] if history else None
    named = current() if runs is not None else None
    if runs is not None and named != runs:
        again = shlex.join(["promoter", "rollback", model, "--env", env, "--to-version", runs])
        raise UserError(f"the audit trail has no version of {model!r} that was live in {env} "
                        f"before version {runs}, which runs there now",
                        hint=f"its alias {alias!r} names {_named(named)}, not what runs: "
                             f"`{again}` moves it back to version {runs}")
    ran = f"only version {runs}" if runs is not None else "no version"
    raise UserError(f"nothing to roll back to: since {env} was (re)started (first deployed, "
                    "or deployed again after its last decommission), the audit trail verified "
                    f"{ran} of {model!r} live there", hint=_nothing_earlier(model, env, alias))


def _nothing_earlier(model: str, env: str, alias: str) -> str:
    """The hint when there is no earlier version to go back to: promote one instead."""
    promote = shlex.join(["promoter", "promote", model, "--version", "N", "--env", env])
    return (f"there is no earlier version to go back to; to deploy another version, promote "
            f"it: move the {alias!r} alias to it in MLflow; its webhook (or `{promote}`) "
            "opens the MR")


def _named(version: str | None) -> str:
    return f"version {version}" if version is not None else "no version"


def _described(live: str | None) -> str:
    return f"version {live}" if live is not None else "no version promoter verified"


def _deployed_nothing(job: dict[str, Any], steps: Mapping[str, object]) -> str | None:
    """How the rollback's job ended without deploying anything (denied, or parked dead
    before its proposal began), or None: done, left in the queue for a retry that still
    deploys the alias's version, or dead after it may have opened the rollback's MR (the
    alias then names what that MR deploys)."""
    if job["state"] == "dead" and PROPOSAL_STARTED not in steps:
        return f"failed (job {job['id']} is dead)"
    if (job.get("result") or {}).get("outcome") == "denied":
        return "denied"
    return None


def _job_steps(settings: Settings, job_id: int) -> dict[str, dict[str, Any]]:
    from promoter.service import composition
    from promoter.service.queue import JobQueue

    queue = JobQueue(composition.state_db(settings))
    try:
        return queue.steps(job_id)
    finally:
        queue.close()


def _refuse_if_denied(settings: Settings, model: str, version: str, env: str,
                      output: str) -> PolicyCheck:
    """Exit 4 with the policy's reasons, before anything moves, when ``version`` may not go
    (back) to ``env``; else `policy check`'s answer. The checks it could not make are said
    as `policy check` says them (the job makes them again, on what it reads)."""
    from promoter.policy_check import Subject, check_policy

    checked = check_policy(settings, Subject(env=env, model=model, version=version))
    decision = checked.decision
    if decision.allowed:
        if output != "json":
            _not_checked.echo(checked)
        return checked
    if output == "json":
        emit_json({"state": "denied", "model": model, "version": version, "env": env,
                   "reasons": decision.reasons, "not_checked": _not_checked.as_json(checked)})
    else:
        typer.echo(f"rollback of {model} in {env} to version {version} denied by policy "
                   "(the alias was not moved):\n  " + "\n  ".join(decision.reasons))
        _not_checked.echo(checked)
    raise typer.Exit(EXIT_POLICY)


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
