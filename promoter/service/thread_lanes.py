"""Threads for the service's blocking work, in lanes: one kind of work cannot take the threads
another kind needs.

Starlette runs blocking calls on anyio's one shared pool (40 threads). The GitLab and Argo CD
hook handlers block on other systems (a GitLab call up to 4 x 30 s, an MLflow tag ~20 s while
MLflow is slow): a burst of them held every thread, so /readyz's checks found none within their
4 s, the kubelet took the replica out of the Service, and MLflow's deliveries, which MLflow
never sends again, found no endpoint. Each lane is a pool of its own, so hooks queue behind
hooks and probes behind probes only.

A pool rather than an ``anyio.CapacityLimiter``: a probe that stops waiting (``wait_for``)
gives its limiter token back while its thread runs on, so a hung disk would pile up a thread
per probe without bound. A pool's thread counts until its call returns, and a call still
queued when its caller stops waiting is dropped unrun.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# GitLab and Argo CD hook handlers together. Enough that a normal burst (Argo CD notifies once
# per Application and change) is handled at once, few enough that the threads they hold while
# GitLab or MLflow hangs stay modest. A delivery arriving while all are busy waits for one:
# see hook_http.handled for why it is not refused.
HOOK_THREADS = 16
# /readyz runs its queue and state-write checks together; two more let a second probe (the
# kubelet's next, or a person's) start while a slow one still holds its threads.
READINESS_THREADS = 4
# MLflow's reachability is only reported: one check at a time, so a hanging MLflow holds one
# thread, and /readyz reports "no answer" meanwhile instead of starting another.
MLFLOW_REPORT_THREADS = 1
# /metrics: Prometheus scrapes one at a time per server; one spare for a second scraper.
METRICS_THREADS = 2


class Lane:
    """At most ``threads`` calls of one kind running at once; further calls wait their turn."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on one of this lane's threads. Cancelled while still queued (the caller
        stopped waiting), it never runs; once running, it runs to its end."""
        if self._pool is None:  # threads start on first use: creating the app needs none
            self._pool = ThreadPoolExecutor(self.threads,
                                            thread_name_prefix=f"promoter-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)
