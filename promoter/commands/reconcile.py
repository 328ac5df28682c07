"""`promoter reconcile --once`: one reconcile pass, as `promoter serve` runs them periodically:
MLflow's aliases and stages compared with the last pass, then the MR sweep. Like the loop, it
runs only while holding the ``reconcile`` leadership (StateDB.leadership): on a PostgreSQL
state shared with `serve` replicas, the one that leads runs the passes and this run does
nothing (exit 0: a CronJob tick the service already covers is no failure)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.errors import (
    PermanentError,
    PromoterError,
    UsageError,
    exit_code_for,
)

if TYPE_CHECKING:
    from promoter.ports.registry import Registry
    from promoter.service.mr_sweep import SweepReport
    from promoter.service.reconcile import PassReport
    from promoter.settings import Settings
    from promoter.state.db import Leadership


def reconcile(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(
        "--once", help="run one pass and exit (`promoter serve` runs passes periodically)")
    ] = False,
    output: str = OUTPUT_OPTION,
) -> None:
    """Enqueue a job for every environment whose alias or legacy stage target
    changed, then record merges and closes whose webhook never arrived.

    Catches MLflow webhooks missed while promoter was down, legacy stage
    transitions (MLflow sends no webhook for them) and lost GitLab Merge
    Request Hooks: GitLab deliveries that failed while promoter acted on them
    are handled again when due (GitLab does not retry them), and the MR sweep
    asks the git provider about the merge requests
    the ledger still waits on (at most 20, oldest first) and about the
    garbage-collection MRs `promoter gc` noted whose merge or close is not
    recorded yet (at most 10), as `serve` does. A noted GC MR that was deleted
    is audited and no longer followed.

    On a PostgreSQL state the run takes the reconcile leadership first, as
    each `serve` replica does for its loop: while another process (a replica)
    leads, it runs nothing, says so and exits 0, since that replica runs the
    same pass and sweep. One that loses the lead mid-pass stops before the
    next model's writes and leaves the sweep to the new leader. With SQLite
    (one host) every process leads; its writes exclude each other.

    Exit codes: 0 both done, or nothing run while another process leads. An
    MLflow failure ends the command with its code before the sweep (which
    writes to MLflow too); one model whose stages MLflow could not list does
    not: the pass goes on with the others, lists it, and the command ends after
    the sweep with 3 (MLflow did not answer) or 1 (MLflow, or a proxy before it,
    refused the request: a fault to fix). When the MR sweep fails, the pass's
    report is printed first, then the error: 3 the forge is unavailable, 1 a
    fault to fix (token, settings, a deployment's MR gone). The next run retries.
    """
    if not once:
        raise UsageError("pass --once (the periodic loop runs inside `promoter serve`)")
    from promoter.service import composition

    settings = state(ctx).settings()
    registry = composition.registry(settings)
    leadership = _take_lead(settings)
    if leadership is None:
        _report_led_elsewhere(output)
        return
    try:
        report = _mlflow_pass(settings, registry, leadership.held)
        # Asked again, as `serve` does: a lead lost in the pass leaves the sweep to the leader.
        redone = _failed_deliveries(settings, registry) if leadership.held() else None
        swept, broken = _mr_sweep(settings, registry) if leadership.held() else (None, None)
    finally:
        leadership.release()  # at once: a replica's loop need not wait for this to exit
    if output == "json":
        failed = {"error": broken.message, "hint": broken.hint} if broken else {}
        emit_json({**report.describe(), "mr_sweep": swept.describe() if swept else failed,
                   **({"failed_deliveries": redone} if redone is not None else {})})
    else:
        _print_pass(report)
        if redone is not None:
            typer.echo(f"failed GitLab deliveries handled again: {redone.get('answered', 0)}"
                       + (f" (error: {redone['error']})" if "error" in redone else ""))
        if swept is not None:
            _print_sweep(swept)
    _exit_on_sweep_failure(swept, broken)
    if report.failed:
        typer.echo(f"error: MLflow could not list the stages of {len(report.failed)} model(s) "
                   "(listed in the report); the next run looks them up again", err=True)
        raise typer.Exit(report.exit_code)


def _take_lead(settings: Settings) -> Leadership | None:
    """The reconcile leadership, held; None while another process holds it. SQLite: always
    held (StateDB.leadership's default: every process on the host runs passes)."""
    from promoter.service import composition
    from promoter.service.reconcile import LEADERSHIP

    db = composition.state_db(settings)
    try:
        leadership = db.leadership(LEADERSHIP)
        if leadership.held():
            return leadership
        # held() is also False when its connection failed: an outage ends the run with its
        # own error (exit 3) here, rather than passing for another process's lead.
        db.read(lambda conn: conn.execute("SELECT 1").fetchone())
        return None
    finally:
        db.close()  # the pass opens the state again (PostgreSQL: the lead has its own session)


def _report_led_elsewhere(output: str) -> None:
    reason = ("another promoter process leads the reconcile loop (a `promoter serve` "
              "replica, or another `reconcile --once`) and runs the pass and the MR sweep "
              "itself; nothing done")
    if output == "json":
        emit_json({"skipped": True, "reason": reason})
    else:
        typer.echo(reason)


def _mlflow_pass(settings: Settings, registry: Registry,
                 leading: Callable[[], bool] | None = None) -> PassReport:
    from promoter.service import composition
    from promoter.service.queue import JobQueue
    from promoter.service.reconcile import ReconcileState, reconcile_once

    queue = JobQueue(composition.state_db(settings))
    store = ReconcileState(queue.db)
    try:
        return reconcile_once(settings, registry, queue, store, leading=leading)
    finally:
        store.close()
        queue.close()


def _failed_deliveries(settings: Settings, registry: Registry) -> dict[str, object] | None:
    """GitLab deliveries that failed while acted on, handled again when due, as `serve`'s
    loop does before its sweep (for `serve --no-reconcile` with this run on a schedule):
    {"answered": n}, or {"error": …} (the sweep still runs); None without GitLab."""
    from promoter.service import composition

    if settings.git.provider != "gitlab":
        return None
    try:
        hook = composition.gitlab_hook(settings, composition.outcomes(settings, registry))
        return {"answered": hook.retry_failed()}
    except PromoterError as exc:
        return {"error": exc.message}


def _mr_sweep(settings: Settings,
              registry: Registry) -> tuple[SweepReport | None, PromoterError | None]:
    """The sweep `promoter serve` runs after each pass, wired the same way. Its failure is
    returned, not raised: a forge outage must not hide what the MLflow pass did."""
    from promoter.service import composition

    try:
        sweep = composition.mr_sweep(settings, composition.outcomes(settings, registry))
        return sweep(), None
    except PromoterError as exc:
        return None, exc
    except Exception as exc:  # a bug: still after the pass's report, its trace in the log
        logging.getLogger("promoter.reconcile").exception("the MR sweep crashed")
        return None, PermanentError(f"unexpected {type(exc).__name__} (its trace is logged)")


def _print_pass(report: PassReport) -> None:
    typer.echo(f"{report.models} models, {report.changed_versions} changed versions, "
               f"{report.stage_lookups} stage lookups")
    for job in report.jobs:
        verb = "queued" if job["created"] else "already covered by"
        typer.echo(f"  {verb} job {job['job_id']}: {job['action']} {job['model']} "
                   f"v{job['version']} → {job['env']}")
    for failed in report.failed:
        typer.echo(f"  could not list the stages of {failed['model']}: {failed['error']}")
    for model in report.unlisted:
        typer.echo(f"  {model}: missing from MLflow's listing but still there (it shifted "
                   "while paged); looked at again next run")
    if report.stopped_at is not None:
        typer.echo(f"  stopped before the writes for {report.stopped_at}: another process "
                   "took the reconcile lead meanwhile; its pass and MR sweep cover the rest")


def _print_sweep(swept: SweepReport) -> None:
    typer.echo(f"MR sweep: {swept.looked_at} waiting merge requests looked at, "
               f"{len(swept.recorded)} outcomes recorded, {swept.failed} failed")
    for outcome in swept.recorded:
        typer.echo(f"  recorded {outcome['action']} of MR !{outcome['iid']}: "
                   f"{outcome['name']} → {outcome['env']}")
    for failure in swept.failures:
        typer.echo(f"  could not check MR !{failure.iid} ({failure.name} → {failure.env}): "
                   f"{failure.error.message}")
    for iid in swept.gone:
        typer.echo(f"  GC MR !{iid}: no longer on the forge (deleted); no longer followed")
    for busy in swept.elsewhere:
        typer.echo(f"  MR !{busy['iid']} ({busy['name']} → {busy['env']}): being recorded by "
                   "another handler (the webhook or another replica)")


def _exit_on_sweep_failure(swept: SweepReport | None, broken: PromoterError | None) -> None:
    """After the report: the sweep's error on stderr and its exit code (the first MR's, when
    only some MRs failed), so a CronJob notices while the pass's jobs stay queued."""
    if broken is not None:
        typer.echo(f"error: the MR sweep failed: {broken}\n  the MLflow pass above completed; "
                   "the next run looks for lost merges and closes again", err=True)
        raise typer.Exit(exit_code_for(broken))
    if swept is not None and swept.failures:
        typer.echo(f"error: the MR sweep could not check {swept.failed} merge request(s) "
                   "(listed in the report); their outcomes stay unrecorded until a run "
                   "checks them", err=True)
        raise typer.Exit(exit_code_for(swept.failures[0].error))


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile)
