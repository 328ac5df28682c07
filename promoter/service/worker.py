"""The worker: claim a job, run the handler under a lease, record what happened.

The handler returns the job's result (→ done) or raises: TransientError → retrying with
exponential backoff and full jitter (honouring ``retry_after``) until ``max_attempts``, then
dead; PermanentError / UserError / AuthError → dead with the reason; PolicyDenied → done with
``result["outcome"] == "denied"``. While the handler runs, a heartbeat thread keeps extending
the lease, so only a worker that died (or hangs without its process) lets the lease expire —
and then another worker picks the job up again, with the step results recorded so far.

An attempt whose handler is still running after ``job_timeout_seconds`` is given up by the
heartbeat: it fails the job as a TransientError would (retried with backoff, or dead after the
last attempt), so a handler hung in a call without a timeout cannot keep its job, and every
newer job of its deployment, waiting forever. Python cannot stop the hung thread: its next step
or side effect raises LeaseLost, and whatever it returns is dropped (the job is no longer its
to settle; the queue refuses a stale holder's outcome anyway). Its worker thread stays taken
until the call returns. As the hung call may be a side effect (a push, an MR request), the
retry is due no earlier than the lease granted for the last side effect has run out, whatever
the backoff: the same rule as for a job let go at shutdown (below).

At shutdown, an attempt still running when the grace period ends is let go (let_go_of_current):
the job goes back to ``retrying``, its attempt counted, for another replica to take over; the
handler stops at its next step, as after a timeout. It is due at once if the handler has begun
no side effect, else once the lease granted for its last side effect has run out: a push or
merge request already sent may still take effect until then, and a takeover must not overlap it.

Writing the outcome (done, retrying, dead) is retried a few times, with the heartbeat still
running, when the state database fails transiently: a job whose work is finished must not be
run a second time (a second proposal, a second write-back) because of one connection reset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random as random_module
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from promoter.core.jobs import (
    DEAD,
    DONE,
    JOB_TIMEOUT_SECONDS,
    MAX_ATTEMPTS,
    Backoff,
    Job,
    outcome_for_error,
    retryable_again,
)
from promoter.errors import PromoterError, TransientError
from promoter.service.job_context import JobContext, JobHandler
from promoter.service.queue import JobQueue, LeaseLost
from promoter.state.db import StateConflict

log = logging.getLogger("promoter.worker")

# Pauses between attempts to write a job's outcome after a transient database error. About
# 8 s in all: long enough for a connection reset, a PostgreSQL failover or a busy SQLite file
# to pass, short against a lease (60 s by default), which the heartbeat keeps renewing meanwhile.
SETTLE_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0)
# After a failed lease extension the heartbeat tries again this soon (or at a tenth of the
# lease, if shorter), until the lease would have run out.
HEARTBEAT_RETRY_SECONDS = 2.0


def _log_job(level: int, message: str, job: Job, **fields: Any) -> None:
    """One structured record per job event (promoter.service.logs renders ``fields``)."""
    if log.isEnabledFor(level):
        log.log(level, f"{message}: {job.key.describe()}", extra={"fields": {
            "job_id": job.id, "model": job.key.model, "version": job.key.version,
            "env": job.key.env, "action": job.key.action, "attempt": job.attempts, **fields}})


def _no_heartbeat() -> None:
    """Nothing to stop: no heartbeat runs."""


class _AttemptEnd:
    """Who settles an attempt: its handler finishing (returning or raising) or its time
    running out, whichever comes first; the other leaves the job alone. Otherwise a handler
    returning just as its attempt timed out could see its finished work retried, or a handler
    returning long after could write over what the job went on to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ended = False

    def first(self) -> bool:
        """True for the first caller only."""
        with self._lock:
            ended, self._ended = self._ended, True
            return not ended


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(self, queue: JobQueue, handler: JobHandler, worker_id: str | None = None,
                 lease_seconds: float = 60.0, max_attempts: int = MAX_ATTEMPTS, *,
                 backoff: Backoff | None = None, random: Callable[[], float] | None = None,
                 poll_seconds: float = 1.0, heartbeat: bool = True,
                 job_timeout_seconds: float = JOB_TIMEOUT_SECONDS,
                 housekeeping_seconds: float = 3600.0,
                 settle_retry_delays: tuple[float, ...] = SETTLE_RETRY_DELAYS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.queue = queue
        self.handler = handler
        self.worker_id = worker_id or default_worker_id()
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.random = random or random_module.Random().random  # noqa: S311 (jitter only)
        self.poll_seconds = poll_seconds
        self.heartbeat = heartbeat  # it also enforces job_timeout_seconds
        self.job_timeout_seconds = job_timeout_seconds
        self.housekeeping_seconds = housekeeping_seconds
        self.settle_retry_delays = settle_retry_delays
        self.sleep = sleep
        # The job whose attempt timed out while its handler still runs in this thread, and
        # since when (monotonic): /healthz reads it through stuck_workers.
        self._stuck: tuple[int, float] | None = None
        # The attempt under way (job, its context, who settles it), for let_go_of_current.
        self._current: tuple[Job, JobContext, _AttemptEnd] | None = None

    def stuck_job(self) -> tuple[int, float] | None:
        """(job id, seconds since it timed out) while this worker's thread is still held by
        an attempt given up after job_timeout_seconds; None otherwise."""
        stuck = self._stuck
        return None if stuck is None else (stuck[0], time.monotonic() - stuck[1])

    def wake(self) -> None:
        """Cut idle waits short (every worker of this queue in this process), e.g. to stop."""
        self.queue.notify_work()

    def run_forever(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set. Idle, wait for an in-process enqueue or ``poll_seconds``
        (jobs enqueued by other processes, retries coming due); call wake() after setting
        ``stop`` to end the wait at once."""
        next_housekeeping = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + self.housekeeping_seconds
                self._housekeeping()
            seen = self.queue.work_generation()  # read first: no wake-up can slip through
            try:
                worked = self.run_once()
            except PromoterError as exc:  # the queue itself is unusable: wait, then try again
                log.error("worker %s cannot use the job queue: %s", self.worker_id, exc)
                worked = False
            except Exception:  # a bug must not silently end the service's only worker
                log.exception("worker %s hit an unexpected error; continuing", self.worker_id)
                worked = False
            if not worked and not stop.is_set():
                self.queue.wait_for_work(seen, self._idle_wait())

    def _idle_wait(self) -> float:
        """Poll, but wake when a waiting job (a debounced successor, a retry) comes due."""
        try:
            due = self.queue.seconds_until_due()
        except PromoterError:
            return self.poll_seconds
        return self.poll_seconds if due is None else min(self.poll_seconds, max(due, 0.01))

    def _housekeeping(self) -> None:
        try:
            forgotten = self.queue.prune_deliveries()
        except PromoterError as exc:
            log.warning("could not prune old delivery ids: %s", exc)
            return
        if forgotten:
            log.info("forgot %d delivery ids past their retention", forgotten)

    def run_once(self, job_id: int | None = None) -> bool:
        """Claim and run one due job (with ``job_id``: that job, and no other); False when
        none is due."""
        job = self.queue.claim(self.worker_id, self.lease_seconds, job_id=job_id)
        if job is None:
            return False
        if not retryable_again(job.attempts, self.max_attempts):
            reason = (f"gave up after {job.attempts - 1} attempts; the last one never finished "
                      f"(its worker stopped or lost its lease). Last reason: {job.reason}")
            self._settle(job, lambda: self.queue.park(job.id, self.worker_id, reason))
            _log_job(logging.ERROR, "job dead", job, reason=reason)
            return True
        _log_job(logging.INFO, "job started", job, worker=self.worker_id)
        stop_heartbeat = _no_heartbeat  # until the context (its steps read) exists
        end = _AttemptEnd()
        try:
            context = JobContext(self.queue, job, self.worker_id, self.lease_seconds,
                                 self.max_attempts)
            stop_heartbeat = self._start_heartbeat(context, end)
            self._current = (job, context, end)
            self._run_handler(job, context, end)
        finally:
            self._current = None
            # Only now: the heartbeat keeps the lease while the outcome's write is retried.
            stop_heartbeat()
            self._stuck = None  # the handler has returned: the thread is free again
        return True

    def let_go_of_current(self, reason: str) -> Job | None:
        """Give up the attempt under way, from another thread (serve's shutdown, once its
        grace has run out): the job goes back to ``retrying``, its attempt counted
        (JobQueue.let_go), and the handler stops at its next step; whatever it returns is
        dropped. Another replica takes it over at once if the handler began no side effect,
        else once the lease before_side_effect granted for the last one runs out (not the
        lease the heartbeat keeps renewing): a push or an MR request this attempt sent may
        still take effect until then, and the next attempt must not race it. Returns the job
        let go; None when no attempt runs, or its outcome is already being written (or it
        timed out): that job's state is its settling's to write."""
        current = self._current
        if current is None:
            return None
        job, context, end = current
        return job if self._let_go(job, context, end, reason) else None

    def _let_go(self, job: Job, context: JobContext, end: _AttemptEnd, reason: str) -> bool:
        """let_go_of_current's hand-back, also the one an interrupted handler gets."""
        if not end.first():
            return False  # timed out, or let go already: its settling writes the job's state
        side_effect_until = context.give_up(reason)
        if not self.queue.let_go(job.id, self.worker_id, reason, not_before=side_effect_until):
            return False  # another worker had taken it over already (an expired lease)
        _log_job(logging.WARNING, "job let go", job, reason=reason, worker=self.worker_id,
                 due_after_side_effect_lease=side_effect_until is not None)
        return True

    def _run_handler(self, job: Job, context: JobContext, end: _AttemptEnd) -> None:
        try:
            result = dict(self.handler(job, context) or {})  # a bad return is a failure too
        except LeaseLost as exc:
            _log_job(logging.WARNING, "job abandoned: lease lost", job, reason=str(exc))
            return
        except Exception as exc:
            if self._handler_ends_attempt(job, end):
                self._handle_failure(job, exc)
            return
        except BaseException:
            # Ctrl-C (promote and rollback run handlers on the main thread, which gets the
            # KeyboardInterrupt): the handler has stopped, so the job need not wait out the
            # heartbeat's lease, but a side effect it began may still take effect (GitLab
            # carries out a request already sent): due once that side effect's lease is over.
            with contextlib.suppress(Exception):
                self._let_go(job, context, end, "its worker was interrupted while it ran")
            raise
        if not self._handler_ends_attempt(job, end):
            return
        self._settle(job, lambda: self.queue.complete(job.id, self.worker_id, result))
        _log_job(logging.INFO, "job done", job)

    def _handler_ends_attempt(self, job: Job, end: _AttemptEnd) -> bool:
        if end.first():
            return True
        _log_job(logging.WARNING, "job outcome dropped: the attempt had been given up (it "
                 "timed out, or was let go at shutdown)", job,
                 timeout_seconds=self.job_timeout_seconds)
        return False

    def _handle_failure(self, job: Job, error: Exception, *,
                        not_before: float | None = None) -> None:  # see _time_out
        outcome = outcome_for_error(error, job.attempts, self.max_attempts)
        if outcome.state == DONE:
            self._settle(job, lambda: self.queue.complete(job.id, self.worker_id, outcome.result,
                                                          reason=outcome.reason))
            _log_job(logging.INFO, "job done: policy denied", job, reason=outcome.reason)
        elif outcome.state == DEAD:
            self._settle(job, lambda: self.queue.park(job.id, self.worker_id,
                                                      outcome.reason or "failed"))
            _log_job(logging.ERROR, "job dead", job, reason=outcome.reason)
        else:
            delay = self.backoff.delay(job.attempts, self.random, outcome.retry_after)
            self._settle(job, lambda: self.queue.retry_later(
                job.id, self.worker_id, outcome.reason or "failed", delay, not_before=not_before))
            _log_job(logging.WARNING, "job will be retried", job, reason=outcome.reason,
                     retry_in_seconds=round(delay, 3),
                     due_after_side_effect_lease=not_before is not None)

    def _settle(self, job: Job, write: Callable[[], None]) -> None:
        """Write the job's outcome, retrying transient database errors while the lease holds.

        Giving up re-raises the last error: the job stays running under a lease nobody renews,
        and once that runs out another worker runs the whole job again."""
        delays = iter(self.settle_retry_delays)
        failed_before = False
        while True:
            try:
                write()
                return
            except LeaseLost as exc:
                self._log_lease_lost_at_settle(job, exc, failed_before)
                return
            except StateConflict:
                raise  # a broken uniqueness rule stays broken: retrying cannot cure it
            except TransientError as exc:
                delay = next(delays, None)
                if delay is None:
                    _log_job(logging.ERROR, "job outcome not recorded: the state database "
                             "kept failing; the job is left to its lease, after which another "
                             "worker runs it again", job, reason=str(exc))
                    raise
                _log_job(logging.WARNING, "job outcome not recorded yet; retrying", job,
                         reason=str(exc), retry_in_seconds=delay)
                failed_before = True
                self.sleep(delay)

    @staticmethod
    def _log_lease_lost_at_settle(job: Job, error: LeaseLost, failed_before: bool) -> None:
        if failed_before:  # a write whose answer was lost may have committed the outcome
            _log_job(logging.INFO, "job outcome already recorded or the job re-claimed", job,
                     reason=str(error))
        else:  # someone else re-claimed it; their outcome stands
            _log_job(logging.WARNING, "job outcome not recorded: lease lost", job,
                     reason=str(error))

    def _start_heartbeat(self, context: JobContext, end: _AttemptEnd) -> Callable[[], None]:
        if not self.heartbeat:
            return _no_heartbeat
        job, stop = context.job, threading.Event()
        deadline = time.monotonic() + self.job_timeout_seconds

        def beat() -> None:
            extended, wait = time.monotonic(), self.lease_seconds / 3
            while not stop.wait(_until_next_beat(wait, deadline)):
                # Past the deadline, unless the handler has finished and its outcome is being
                # written: then the lease is kept until that write is done.
                if time.monotonic() >= deadline and end.first():
                    self._time_out(context)
                    return  # no more renewals: the job is settled, or its lease runs out
                try:
                    if self.queue.extend_lease(job.id, self.worker_id, self.lease_seconds) is None:
                        _log_job(logging.WARNING, "job lease lost", job)
                        context.lease_lost()  # the handler stops at its next step
                        return
                    extended, wait = time.monotonic(), self.lease_seconds / 3
                except PromoterError as exc:
                    if time.monotonic() - extended >= self.lease_seconds:
                        # Another worker may hold the job by now: stop before a side effect.
                        _log_job(logging.WARNING, "job lease ran out while it could not be "
                                 "extended", job, reason=str(exc))
                        context.lease_lost()
                        return
                    # Try again soon, not a third of the lease later: one failed attempt (a
                    # pool wait can take longer than that third) must not cost the lease.
                    wait = min(HEARTBEAT_RETRY_SECONDS, self.lease_seconds / 10)
                    _log_job(logging.WARNING, "job lease not extended; trying again", job,
                             reason=str(exc), retry_in_seconds=wait)

        thread = threading.Thread(target=beat, name=f"lease-{job.id}", daemon=True)
        thread.start()

        def stop_beating() -> None:
            stop.set()
            thread.join(self.lease_seconds)

        return stop_beating

    def _time_out(self, context: JobContext) -> None:
        """Give up an attempt still running after job_timeout_seconds. Its handler stops at
        its next step or side effect; the job fails as on a transient error (retried after a
        backoff, or dead after the last attempt), which also ends this worker's lease. The
        hung call may be a side effect still in flight: the retry is not due before the lease
        granted for it runs out (give_up, under the lock no new grant passes)."""
        limit = f"{self.job_timeout_seconds:g} s"
        self._stuck = (context.job.id, time.monotonic())
        side_effect_until = context.give_up(f"its attempt timed out after {limit}")
        error = TransientError(f"timed out after {limit} (server.job_timeout_seconds); the "
                               "attempt was given up while its handler was still running")
        _log_job(logging.ERROR, "job attempt timed out", context.job,
                 timeout_seconds=self.job_timeout_seconds, worker=self.worker_id)
        try:
            self._handle_failure(context.job, error, not_before=side_effect_until)
        except Exception as exc:  # logged by _settle; the unrenewed lease runs out instead
            _log_job(logging.ERROR, "timed-out job left to its lease", context.job,
                     reason=str(exc))


def _until_next_beat(wait: float, deadline: float) -> float:
    """``wait``, or less if the attempt's deadline comes first (not once it has passed)."""
    left = deadline - time.monotonic()
    return min(wait, left) if left > 0 else wait


def stuck_workers(workers: Sequence[Worker]) -> str | None:
    """Why this process should be restarted, or None: every one of its job workers is held by
    an attempt given up after job_timeout_seconds. Python cannot end those threads, so only a
    restart gives the replica its workers back; while any worker is free, jobs still run and
    a restart would only cut the others' attempts short."""
    stuck = [found for worker in workers if (found := worker.stuck_job()) is not None]
    if not workers or len(stuck) < len(workers):
        return None
    jobs = ", ".join(f"job {job_id} ({seconds:.0f} s)" for job_id, seconds in stuck)
    return (f"all {len(workers)} job workers are held by attempts that timed out and never "
            f"returned: {jobs}; restart to free them")
