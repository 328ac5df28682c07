"""`promoter jobs list|show|retry`: look into the job queue and requeue what failed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, one_of, state
from promoter.core.jobs import JobState

if TYPE_CHECKING:
    from promoter.core.jobs import Job
    from promoter.service.queue import JobQueue

# Job ids (and LIMITs) are 64-bit integers in both stores; a larger one is a typo, not a lookup.
MAX_JOB_ID = 2**63 - 1

JobId = Annotated[int, typer.Argument(help="job id", min=1, max=MAX_JOB_ID)]

jobs_app = typer.Typer(help="Inspect and retry promotion jobs in the queue.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


def _open_queue(ctx: typer.Context, output: str) -> JobQueue:
    if output not in ("text", "json"):
        raise typer.BadParameter(f"--output must be text or json, not {output!r}")
    from promoter.service import composition
    from promoter.service.queue import JobQueue

    return JobQueue(composition.state_db(state(ctx).settings()))


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    job_state: Annotated[str | None, typer.Option(
        "--state", "-s", help="only jobs in this state: queued, running, retrying, done, dead",
        callback=one_of(*(state.value for state in JobState)))] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_JOB_ID,
                                       help="at most this many")] = 100,
    output: str = OUTPUT_OPTION,
) -> None:
    """List jobs, newest first."""
    queue = _open_queue(ctx, output)
    try:
        jobs = queue.list(job_state, limit)
    finally:
        queue.close()
    if output == "json":
        emit_json([job.as_dict() for job in jobs])
        return
    if not jobs:
        typer.echo("no jobs" + (f" in state {job_state}" if job_state else ""))
        return
    rows = [("ID", "STATE", "ATTEMPTS", "ACTION", "MODEL", "VERSION", "ENV", "UPDATED", "REASON")]
    rows += [(str(j.id), _state_label(j), str(j.attempts), j.key.action, j.key.model,
              j.key.version, j.key.env, _when(j.updated_at), _short(j.reason)) for j in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]).rstrip())


@jobs_app.command("show")
def show_job(ctx: typer.Context, job_id: JobId,
             output: str = OUTPUT_OPTION) -> None:
    """Show one job: state, attempts, reason, recorded steps and timestamps."""
    queue = _open_queue(ctx, output)
    try:
        job = queue.get(job_id)
        steps = queue.steps(job_id)
    finally:
        queue.close()
    if output == "json":
        emit_json({**job.as_dict(), "steps": steps})
        return
    lines = [
        f"job {job.id}: {job.key.describe()}",
        f"  state:       {_state_label(job)}",
        f"  attempts:    {job.attempts}",
        f"  reason:      {job.reason or '-'}",
        f"  created:     {_when(job.created_at)}",
        f"  updated:     {_when(job.updated_at)}",
    ]
    if job.state in ("queued", "retrying"):
        lines.append(f"  next run:    {_when(job.next_run_at)}")
    if job.lease_owner:
        lines.append(f"  lease:       {job.lease_owner} until {_when(job.lease_expires_at)}")
    lines.append("  steps:" + ("" if steps else "       none recorded"))
    lines += [f"    {name}: {_compact(result)}" for name, result in steps.items()]
    if job.result:
        lines.append(f"  result:      {_compact(job.result)}")
    typer.echo("\n".join(lines))


@jobs_app.command("retry")
def retry_job(ctx: typer.Context, job_id: JobId,
              output: str = OUTPUT_OPTION) -> None:
    """Queue a dead, retrying or policy-denied job to run again now."""
    queue = _open_queue(ctx, output)
    try:
        job = queue.retry(job_id)
    finally:
        queue.close()
    if output == "json":
        emit_json(job.as_dict())
    else:
        typer.echo(f"job {job.id} queued again: {job.key.describe()}")


def _state_label(job: Job) -> str:
    return "done (denied)" if job.state == "done" and job.result.get("outcome") == "denied" \
        else job.state


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    first_line = text.splitlines()[0]
    return first_line if len(first_line) <= width else first_line[: width - 1] + "…"


def _compact(value: dict[str, Any]) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)
