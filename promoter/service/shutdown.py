"""How `promoter serve` stops its background work: a grace period, then let go.

The workers and the reconcile loop are told to stop and get one grace period, in all, to end:
a job that finishes within it is recorded as usual. A job still running when it is over is
let go (Worker.let_go_of_current): back to ``retrying``, its attempt counted, so another
replica takes it over: at once if its handler had begun no side effect, else once the lease
granted for its last side effect runs out (a push or MR request already sent may still take
effect until then). Without that, the process either waited on the job for as long as it ran
or exited with the job still ``running`` under a lease its heartbeat had kept renewing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from promoter.core.jobs import Job
from promoter.errors import PromoterError
from promoter.service.logs import log
from promoter.service.worker import Worker

_log = logging.getLogger("promoter.serve")
# Within the pod's terminationGracePeriodSeconds (60 in deploy/), after uvicorn's own
# shutdown, with time left to let go of the jobs and close the state database.
SHUTDOWN_GRACE_SECONDS = 30.0
LET_GO_REASON = "promoter serve shut down while the attempt ran; another worker takes it over"


def stop_background_work(stop: threading.Event, workers: Sequence[Worker],
                         threads: Sequence[threading.Thread],
                         grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> list[Job]:
    """Set ``stop``, wait up to ``grace_seconds`` in all for ``threads`` (the workers' and the
    reconcile loop's) to end, then let go of every job still running; returns those jobs.
    Threads still running then are left behind (daemon threads end with the process)."""
    stop.set()
    for worker in workers:
        worker.wake()  # idle workers notice the stop now, not at their next poll
    deadline = time.monotonic() + grace_seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    let_go: list[Job] = []
    for worker in workers:
        try:
            job = worker.let_go_of_current(LET_GO_REASON)
        except PromoterError as exc:  # the state database is down: the lease runs out instead
            log(_log, logging.ERROR, "a running job could not be let go; another worker takes "
                "it over once its lease runs out", worker=worker.worker_id, error=str(exc))
            continue
        if job is not None:
            let_go.append(job)
    if let_go:
        log(_log, logging.WARNING, "shutdown grace over: running jobs let go",
            grace_seconds=grace_seconds, jobs=[job.id for job in let_go])
    return let_go
