"""What ``promoter serve`` runs: uvicorn, worker thread(s) and the periodic reconcile loop.

Shutdown on SIGTERM or SIGINT: uvicorn stops accepting and finishes in-flight requests, then
the workers and the reconcile loop get SHUTDOWN_GRACE_SECONDS in all to end; a job still
running after that is let go (back to retrying, its recorded steps kept) for another replica
to take over, at once or once the lease of a side effect it was in runs out
(promoter.service.shutdown), and the queue is closed. On SIGINT the CLI may end the process
sooner (see serve's ``finally``).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

from promoter.service import logs
from promoter.service.logs import log

if TYPE_CHECKING:
    from promoter.ports.registry import Registry
    from promoter.settings import Settings

_log = logging.getLogger("promoter.serve")
# Idle workers wake on an enqueue in this process at once. Other processes' enqueues: SQLite
# has no wake-up across processes, so poll every second; PostgreSQL's LISTEN/NOTIFY wakes
# them, and the poll is only the fallback (a lost notification, an expired lease to reclaim).
POLL_SECONDS = {False: 1.0, True: 15.0}


def serve(settings: Settings, host: str, port: int, *, probe_port: int | None = None,
          workers: int = 1, reconcile: bool = True) -> None:
    from promoter.service import composition
    from promoter.service.app import create_app
    from promoter.service.http_server import probe_config, server_config, without_metrics
    from promoter.service.jobs_handler import build_job_handler
    from promoter.service.listeners import ProbeServer, WebhookServer, bind
    from promoter.service.metrics import Metrics
    from promoter.service.queue import JobQueue
    from promoter.service.reconcile import run_periodically
    from promoter.service.shutdown import stop_background_work
    from promoter.service.worker import Worker, stuck_workers

    logs.configure(secrets=settings.secret_values())
    # Bound first: a probe port already taken fails the start before anything else opens.
    probe_socket = bind(host, probe_port) if probe_port is not None else None
    queue = JobQueue(composition.state_db(settings),
                     settle_seconds=settings.server.burst_settle_seconds)

    registry = _registry(settings)
    metrics = Metrics()
    gitlab_hook = None
    outcomes = composition.outcomes(settings, registry)  # the hook's and the MR sweep's
    if settings.git.provider == "gitlab":
        gitlab_hook = composition.gitlab_hook(settings, outcomes)
    workers_started: list[Worker] = []
    app = create_app(settings, queue, registry, metrics=metrics, gitlab_hook=gitlab_hook,
                     restart_reason=lambda: stuck_workers(workers_started))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    if registry is not None:
        handler = build_job_handler(settings, registry, metrics)
        for index in range(workers):
            worker = Worker(queue, handler, lease_seconds=settings.server.job_lease_seconds,
                            job_timeout_seconds=settings.server.job_timeout_seconds,
                            poll_seconds=POLL_SECONDS[queue.wakes_across_processes])
            workers_started.append(worker)
            threads.append(threading.Thread(target=worker.run_forever, args=(stop,),
                                            name=f"worker-{index}", daemon=True))
        if reconcile:
            threads.append(threading.Thread(
                target=run_periodically, args=(settings, registry, queue, stop.wait, metrics,
                                               composition.mr_sweep(settings, outcomes, metrics),
                                               gitlab_hook.retry_failed if gitlab_hook else None),
                name="reconcile", daemon=True))
    # uvicorn re-raises the signal it caught once it has shut down; this handler receives it,
    # so the process does not die before the workers have been told to stop.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    probes = (ProbeServer(probe_config(app, settings.server, probe_socket), probe_socket)
              if probe_socket is not None else None)
    webhooks = without_metrics(app) if probes is not None else app
    server = WebhookServer(server_config(webhooks, settings.server, host, port), probes)
    for thread in threads:
        thread.start()
    log(_log, logging.INFO, "promoter serve started", host=host, port=port, probe_port=probe_port,
        workers=workers if registry else 0, state=composition.describe_state(settings),
        mlflow=composition.describe(settings)["mlflow"] if registry else None)
    try:
        server.run()
    finally:
        # Ctrl-C under the CLI: uvicorn hands the SIGINT back once it has stopped, and the
        # CLI's handler (cli._arm_interrupt_watchdog) raises KeyboardInterrupt here and ends
        # the process 10 s later, within the grace. A job still running then is not let go
        # but keeps its lease, its heartbeat gone; that is safe: the worker threads never see
        # the KeyboardInterrupt (the main thread gets it), and each before_side_effect grant
        # and heartbeat renewal overwrites the one lease column, so the lease left is no
        # shorter than any side effect's: nobody takes the job while one may be in flight.
        stop_background_work(stop, workers_started, threads)
        queue.close()
        signal.signal(signal.SIGTERM, previous)
        log(_log, logging.INFO, "promoter serve stopped")


def _registry(settings: Settings) -> Registry | None:
    if not settings.mlflow.tracking_uri:
        log(_log, logging.WARNING, "no MLflow tracking URI: only the webhook listener runs",
            hint="set MLFLOW_TRACKING_URI to run jobs and the reconcile loop")
        return None
    from promoter.service import composition

    return composition.registry(settings)
