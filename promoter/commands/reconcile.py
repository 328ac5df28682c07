"""`promoter reconcile --once`: compare MLflow's aliases and stages with the last pass."""

from __future__ import annotations

from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.errors import UsageError


def reconcile(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(
        "--once", help="run one pass and exit (`promoter serve` runs passes periodically)")
    ] = False,
    output: str = OUTPUT_OPTION,
) -> None:
    """Enqueue a job for every environment whose alias or legacy stage target changed.

    Catches webhooks missed while promoter was down and legacy stage transitions (for which
    MLflow sends no webhook).
    """
    if not once:
        raise UsageError("pass --once (the periodic loop runs inside `promoter serve`)")
    from promoter.service import composition
    from promoter.service.queue import JobQueue
    from promoter.service.reconcile import ReconcileState, reconcile_once

    settings = state(ctx).settings()
    registry = composition.registry(settings)
    queue = JobQueue(composition.state_db(settings))
    store = ReconcileState(queue.db)
    try:
        report = reconcile_once(settings, registry, queue, store)
    finally:
        store.close()
        queue.close()
    if output == "json":
        emit_json(report.describe())
        return
    typer.echo(f"{report.models} models, {report.changed_versions} changed versions, "
               f"{report.stage_lookups} stage lookups")
    for job in report.jobs:
        verb = "queued" if job["created"] else "already covered by"
        typer.echo(f"  {verb} job {job['job_id']}: {job['action']} {job['model']} "
                   f"v{job['version']} → {job['env']}")


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile)
