"""Group commit for the HTTP service: many concurrent enqueues, one transaction, one fsync.

With ``synchronous=FULL`` (SQLite) or a synchronous commit (PostgreSQL) every commit costs an
fsync of the log; one per webhook delivery would cap intake at the disk's fsync rate. Instead
one writer thread takes every request that is waiting, applies them all in a single transaction
(each under its own savepoint, so one bad request cannot sink its neighbours), commits once,
and only then resolves each caller's future — a delivery is acknowledged only after it is
durable. Requests that arrive while a commit is in flight form the next batch, so batches grow
with load and no timer is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promoter.core.jobs import JobKey
from promoter.errors import TransientError
from promoter.service import queue_ops
from promoter.service.queue_ops import EnqueueResult
from promoter.state.db import Connection, StateDB

log = logging.getLogger("promoter.queue")

MAX_BATCH = 512


@dataclass
class _Request:
    key: JobKey
    payload: dict[str, Any] | None
    source: str
    delivery_id: str | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[EnqueueResult]


class GroupCommitWriter:
    def __init__(self, db: StateDB, now: Callable[[Connection], float],
                 max_batch: int = MAX_BATCH, *, settle_seconds: float = 0.0) -> None:
        self._settle_seconds = settle_seconds
        # The writer thread writes through the StateDB (its own per-thread SQLite connection,
        # or one pooled PostgreSQL connection per batch); a failed batch is rolled back there.
        self._db = db
        self._now = now  # the queue's time, read inside the batch's transaction
        self._max_batch = max_batch
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # counters for benchmarks and metrics
        self.requests = 0

    async def submit(self, key: JobKey, payload: dict[str, Any] | None, source: str,
                     delivery_id: str | None) -> EnqueueResult:
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EnqueueResult] = loop.create_future()
        self._requests.put(_Request(key, payload, source, delivery_id, loop, future))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._requests.put(None)
            thread.join(timeout)
        # Whoever submitted after the stop marker must not wait forever.
        leftovers = []
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        if leftovers:
            _settle_all(leftovers, TransientError("the job queue is shutting down",
                                                  hint="send the delivery again"))

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="promoter-queue-writer",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                return
            batch, stop = self._drain(first)
            try:
                self._commit(batch)
            except Exception as exc:  # the disk, the database: fail this batch, keep serving
                log.error("job queue write failed: %s", exc)
                error = TransientError(f"the job queue could not store the delivery: {exc}",
                                       hint="check the state database's disk, permissions "
                                            "and reachability")
                error.__cause__ = exc   # what an answer may say is judged on the cause
                _settle_all(batch, error)
            if stop:
                return

    def _drain(self, first: _Request) -> tuple[list[_Request], bool]:
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit(self, batch: list[_Request]) -> None:
        fatal = self._db.fatal_errors
        # Every (model, env) of the batch is locked up front, sorted (PostgreSQL: one round
        # trip, and batches of several replicas taking them in one order cannot deadlock).
        order = sorted(range(len(batch)), key=lambda i: (batch[i].key.model, batch[i].key.env))
        locks = sorted({queue_ops.work_lock(r.key.model, r.key.env) for r in batch})

        def apply(conn: Connection) -> list[EnqueueResult | BaseException]:
            conn.lock_all(locks)
            now = self._now(conn)  # not before the write lock: it may take a while (JobQueue)
            outcomes: list[EnqueueResult | BaseException] = [None] * len(batch)  # type: ignore[list-item]
            for index in order:
                request = batch[index]
                conn.execute("SAVEPOINT request")
                try:
                    outcomes[index] = queue_ops.enqueue(
                        conn, now, request.key, request.payload, request.source,
                        request.delivery_id, self._settle_seconds)
                except fatal:
                    raise  # locked / I/O: the whole batch fails and is reported as transient
                except Exception as exc:
                    conn.execute("ROLLBACK TO SAVEPOINT request")
                    outcomes[index] = exc
                conn.execute("RELEASE SAVEPOINT request")
            return outcomes

        outcomes = self._db.write(apply)  # one commit, the one fsync for the whole batch
        self.batches += 1
        self.requests += len(batch)
        _settle_all(batch, outcomes)


def _settle_all(batch: list[_Request],
                outcomes: list[EnqueueResult | BaseException] | BaseException) -> None:
    """Resolve every caller's future: one wake-up per event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any]]] = {}
    for index, request in enumerate(batch):
        outcome = outcomes if isinstance(outcomes, BaseException) else outcomes[index]
        by_loop.setdefault(request.loop, []).append((request, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed; nobody waits
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[tuple[_Request, EnqueueResult | BaseException]]) -> None:
    for request, outcome in settled:
        if request.future.done():  # the caller gave up (cancelled); the job is stored anyway
            continue
        if isinstance(outcome, BaseException):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)
