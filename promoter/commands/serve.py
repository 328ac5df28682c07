"""`promoter serve`: the webhook listener, the job worker(s) and the periodic reconcile loop."""

from __future__ import annotations

from typing import Annotated

import typer

from promoter.commands._common import state
from promoter.errors import UsageError


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(
        "--host", help="address to listen on (default: server.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(
        "--port", "-p", min=1, max=65535, help="port (default: server.port, 8080)")] = None,
    probe_port: Annotated[int | None, typer.Option(
        "--probe-port", min=1, max=65535,
        help="also listen here for GET /healthz, /readyz and /metrics only, outside the "
             "webhook port's connection cap; /metrics then leaves the webhook port "
             "(default: server.probe_port, none)")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=0, max=32, help="job worker threads; 0 runs only the listener")] = 1,
    reconcile: Annotated[bool, typer.Option(
        "--reconcile/--no-reconcile",
        help="run the reconcile loop every server.reconcile_interval_seconds")] = True,
) -> None:
    """Receive webhooks, run promotion jobs, reconcile with MLflow and sweep
    lost MR outcomes.

    Endpoints: POST /webhooks/mlflow, /webhooks/databricks, /webhooks/argocd
    and (with git.provider gitlab) /webhooks/gitlab; GET /healthz, /readyz,
    /metrics. Stops gracefully on SIGTERM or Ctrl-C: running jobs get 30 s
    to finish, then are handed back (retrying, due at once) for another
    replica to take over.

    A job attempt still running after server.job_timeout_seconds (3600) is
    given up and retried (dead after the last attempt); a worker thread whose
    call never returns stays taken until it does.

    Above server.max_connections the webhook port answers 503, /healthz
    included; with --probe-port a kubelet probing that port instead does not
    restart a flooded replica.

    With state.url (PostgreSQL), run as many replicas as you like on the same
    database: each accepts webhooks, each job runs on one replica at a time,
    one replica leads the reconcile loop (promoter_reconcile_leader on
    /metrics).
    """
    from promoter.service.runner import serve as run

    settings = state(ctx).settings()
    port = port or settings.server.port
    probe_port = probe_port or settings.server.probe_port
    if probe_port == port:
        raise UsageError(f"the probe port must differ from the webhook port ({port})")
    run(settings, host or settings.server.host, port, probe_port=probe_port, workers=workers,
        reconcile=reconcile)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
