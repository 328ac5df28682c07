"""`promoter promote MODEL --version N --env ENV`: one promotion, now, on the webhook's path.

The job goes through the same durable queue and the same handler a webhook delivery gets; this
command then runs that job — and only that job: other models' queued jobs are left to the
service's workers — until it settles, printing each step as it happens.
"""

from __future__ import annotations

import getpass
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promoter.commands._common import OUTPUT_OPTION, check_version, emit_json, is_tty, state
from promoter.errors import EXIT_POLICY, EXIT_UNEXPECTED, UserError

if TYPE_CHECKING:
    from promoter.settings import Settings

SETTLED = ("done", "dead", "retrying")  # JobState values; imported lazily (fast --help)


def promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="MLflow registered model name")],
    version: Annotated[str, typer.Option("--version", "-v", help="model version",
                                         callback=check_version)],
    env: Annotated[str, typer.Option("--env", "-e", help="environment from promoter.yaml")],
    output: str = OUTPUT_OPTION,
) -> None:
    """Promote one model version into an environment, synchronously, and print each step.

    As with a webhook, the job deploys what the environment's alias (or stage) points at when
    it runs. Exit codes: 0 done, 4 denied by policy, 1 parked as dead, 3 left for retry.
    """
    settings = state(ctx).settings()
    settings.environment(env)
    if not settings.mlflow.tracking_uri:
        raise UserError("promote reads the model from MLflow, but no tracking URI is set",
                        hint="set MLFLOW_TRACKING_URI or mlflow.tracking_uri")
    job, earlier = run_promotion(settings, model, version, env, _Printer(output))
    _finish(job, output, earlier=earlier)


def run_promotion(settings: Settings, model: str, version: str, env: str, printer: _Printer,
                  payload: dict[str, Any] | None = None, *,
                  fresh: bool = False) -> tuple[dict[str, Any], bool]:
    """Enqueue the promotion on the webhook's path and run exactly that job until it settles
    (`promote`, `rollback`): the job record, as `jobs show --output json` gives it, and
    whether the job covering it had finished before (nothing ran now; its result is of then).
    ``fresh``: no job that already ran covers it (core.jobs.needs_new_job)."""
    from promoter.core.jobs import JobKey
    from promoter.service import composition
    from promoter.service.jobs_handler import build_job_handler
    from promoter.service.queue import JobQueue
    from promoter.service.worker import Worker

    queue = JobQueue(composition.state_db(settings))
    try:
        enqueued = queue.enqueue(JobKey(model, version, env, "promote"),
                                 {"source": "cli", "actor": f"cli:{getpass.getuser()}",
                                  **(payload or {})}, source="cli", fresh=fresh)
        job = enqueued.job
        earlier = not enqueued.created and job.state in ("done", "dead")  # finished
        printer.line(f"job {job.id}: {model} version {version} → {env} "
                     f"({'new' if enqueued.created else 'existing job, ' + job.state})")
        handler = build_job_handler(settings, composition.registry(settings), progress=printer)
        # The service's worker id (host, pid, random): a pid alone repeats across hosts and
        # containers, and two holders with one id would pass each other's lease checks.
        worker = Worker(queue, handler, lease_seconds=settings.server.job_lease_seconds,
                        job_timeout_seconds=settings.server.job_timeout_seconds, heartbeat=True)
        while job.state not in SETTLED:
            if not worker.run_once(job.id):
                time.sleep(0.2)  # another worker holds it, or an older job of this model/env
            job = queue.get(job.id)
    finally:
        queue.close()
    return job.as_dict(), earlier


class _Printer:
    def __init__(self, output: str) -> None:
        self.output = output
        self.console: Any = None
        if output == "text" and is_tty():
            from rich.console import Console

            self.console = Console()

    def line(self, text: str) -> None:
        if self.output != "text":
            return
        if self.console is not None:
            # No markup: details quote user text (a denial naming a tag's value), and rich
            # would read "[/]" in it as a tag (MarkupError) or "[bold]" as style; no emoji:
            # it would show ":warning:" in a tag's value as an emoji.
            self.console.print(text, highlight=False, markup=False, emoji=False)
        else:
            typer.echo(text)

    def __call__(self, step: str, outcome: str, detail: str = "") -> None:
        mark = {"ok": "✓", "built": "✓", "reused": "✓", "skipped": "·", "denied": "✗"}.get(
            outcome, "•")
        self.line(f"  {mark} {step:<14} {outcome:<10} {detail}")


def _finish(job: dict[str, Any], output: str, *, dead_hint: str | None = None,
            earlier: bool = False, json_extra: dict[str, Any] | None = None) -> None:
    """Print how ``job`` ended and exit with its code; ``earlier``: it had ended before this
    command, which ran nothing (its MR is not one created now, its denial not a verdict of
    now; still exit 4). JSON is the job record either way, with ``json_extra``'s fields
    (what the command itself found before the job: rollback's checks not made)."""
    result = job.get("result") or {}
    if output == "json":
        emit_json({**job, **(json_extra or {})})
    elif job["state"] == "done":
        outcome = result.get("outcome")
        reasons = "\n  ".join(result.get("reasons", []))
        if outcome == "denied" and earlier:
            # The verdict of then, not of now: the policy (or the version's tags) may have
            # changed since, and only a run of that job asks it again.
            typer.echo(f"denied earlier by policy (job {job['id']}'s verdict from before; "
                       f"nothing ran now, the policy was not asked again):\n  {reasons}\n"
                       f"  hint: `promoter jobs retry {job['id']}` asks the policy again "
                       "(`promoter serve` runs it)")
        elif outcome == "denied":
            typer.echo(f"denied by policy:\n  {reasons}")
        else:
            when = f"done earlier (job {job['id']}; nothing ran now)" if earlier else "done"
            typer.echo(f"{when}: {outcome}; version {result.get('version')}, "
                       f"status {result.get('status')}")
            for label, key in (("merge request", "mr_url"), ("image", "image"),
                               ("signature", "signature")):
                if result.get(key):
                    typer.echo(f"  {label}: {result[key]}")
    if job["state"] == "dead":
        raise UserError(f"job {job['id']} failed: {job['reason']}",
                        hint=dead_hint or f"fix the cause, then `promoter jobs retry "
                                          f"{job['id']}`")
    if job["state"] == "retrying":
        typer.echo(f"job {job['id']} will be retried: {job['reason']}", err=True)
        raise typer.Exit(EXIT_UNEXPECTED)
    if result.get("outcome") == "denied":
        raise typer.Exit(EXIT_POLICY)


def register(app: typer.Typer) -> None:
    app.command("promote")(promote)
