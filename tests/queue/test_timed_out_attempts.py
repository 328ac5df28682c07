"""An attempt given up after ``job_timeout_seconds`` while its handler still runs: Python cannot
stop that thread, so its call may be a side effect still in flight (a push, an MR request).

Its retry must not start that side effect a second time while the first may still take effect
(not due before the lease granted for it runs out, whatever the backoff), and the stuck
attempt, returning at last, must not write over what the retry does. Both state backends; the
queue's time is a manual clock, the timeout real (the heartbeat measures it on the monotonic
clock), every wait bounded.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from promoter.core.jobs import Backoff, Job
from promoter.errors import PermanentError
from promoter.service.job_context import JobContext
from promoter.service.queue import JobKey, JobQueue
from promoter.service.worker import Worker
from tests.queue.conftest import ManualClock
from tests.queue.test_worker import wait_until

V7 = JobKey("fraud-detector", "7", "production", "promote")
WAIT = 30.0  # a bound for things that happen at once; never reached when all is well
LEASE_SECONDS = 30.0
BACKOFF_SECONDS = 5.0  # the first retry's delay with the backoff and jitter below
JOB_TIMEOUT = 0.2  # real seconds


def worker(queue: JobQueue, handler: Any, worker_id: str, **kwargs: Any) -> Worker:
    return Worker(queue, handler, worker_id=worker_id, lease_seconds=LEASE_SECONDS,
                  max_attempts=4, backoff=Backoff(base_seconds=10, cap_seconds=100),
                  random=lambda: 0.5, **kwargs)


def run_hung(queue: JobQueue, handler: Any) -> threading.Thread:
    """Worker w1 running ``handler`` in a thread of its own, given up after JOB_TIMEOUT."""
    thread = threading.Thread(target=worker(queue, handler, "w1", heartbeat=True,
                                            job_timeout_seconds=JOB_TIMEOUT).run_once,
                              daemon=True)
    thread.start()
    return thread


def test_a_retry_after_a_timeout_inside_a_side_effect_waits_for_that_side_effects_lease(
        queue: JobQueue, clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    granted: list[float] = []
    release = threading.Event()
    pushes: list[str] = []
    late: list[str] = []

    def hung_in_its_push(job: Job, ctx: JobContext) -> dict[str, Any]:
        ctx.before_side_effect("propose")
        lease = queue.get(job.id).lease_expires_at  # the manual clock stands still meanwhile
        assert lease is not None
        granted.append(lease)
        release.wait(WAIT)                # git push sent, no answer yet ...
        pushes.append("w1")               # ... and the remote takes it
        try:
            ctx.record_step("pushed", {"by": "w1"})
        except Exception as exc:
            late.append(type(exc).__name__)
            raise
        return {"by": "w1"}

    def pushes_too(job: Job, ctx: JobContext) -> dict[str, Any]:
        ctx.before_side_effect("propose")
        pushes.append("w2")
        ctx.record_step("pushed", {"by": "w2"})
        return {"by": "w2"}

    thread = run_hung(queue, hung_in_its_push)
    try:
        wait_until(lambda: queue.get(job.id).state == "retrying", "the attempt timed out")
        timed_out = queue.get(job.id)
        assert (timed_out.attempts, timed_out.lease_owner) == (1, None)
        assert timed_out.next_run_at >= granted[0]  # not at the backoff's end: the lease's

        w2 = worker(queue, pushes_too, "w2", heartbeat=False)
        clock.advance(BACKOFF_SECONDS)
        assert not w2.run_once()          # w1's push may still land: w2 must not push too
        assert pushes == []

        clock.advance(granted[0] - clock.now())  # the side effect's lease has run out
        assert w2.run_once()
        assert pushes == ["w2"]

        release.set()                     # w1's push returns at last
        thread.join(WAIT)
        assert not thread.is_alive()
        assert late == ["LeaseLost"]      # w1 records nothing after being given up
        done = queue.get(job.id)
        assert (done.state, done.result, done.attempts) == ("done", {"by": "w2"}, 2)
        assert queue.steps(job.id) == {"pushed": {"by": "w2"}}
    finally:
        release.set()
        thread.join(WAIT)


def test_a_timeout_before_any_side_effect_is_retried_after_the_backoff_alone(
        queue: JobQueue, clock: ManualClock) -> None:
    """The lease rule holds a retry back only when a side effect may be in flight."""
    job = queue.enqueue(V7).job
    release = threading.Event()

    def hung_before_its_side_effects(job: Job, ctx: JobContext) -> dict[str, Any]:
        release.wait(WAIT)                # e.g. an image build that never ends
        return {}

    thread = run_hung(queue, hung_before_its_side_effects)
    try:
        wait_until(lambda: queue.get(job.id).state == "retrying", "the attempt timed out")
        assert queue.get(job.id).next_run_at == clock.now() + BACKOFF_SECONDS
        clock.advance(BACKOFF_SECONDS)
        assert worker(queue, lambda job, ctx: {"by": "w2"}, "w2", heartbeat=False).run_once()
        assert queue.get(job.id).state == "done"
    finally:
        release.set()
        thread.join(WAIT)


@pytest.mark.parametrize("ending", ["returns", "raises"])
def test_a_timed_out_attempt_ending_while_its_retry_runs_leaves_the_job_to_the_retry(
        queue: JobQueue, clock: ManualClock, ending: str) -> None:
    """The stuck handler ends (a result, or an error that would park the job) while w2's
    retry is still running: neither ends the job nor touches w2's hold on it; w2's outcome
    is the job's."""
    job = queue.enqueue(V7).job
    release_w1, w2_running, release_w2 = threading.Event(), threading.Event(), threading.Event()

    def hung(job: Job, ctx: JobContext) -> dict[str, Any]:
        release_w1.wait(WAIT)
        if ending == "raises":
            raise PermanentError("the MR was rejected")  # would park the job
        return {"by": "w1"}

    def retry(job: Job, ctx: JobContext) -> dict[str, Any]:
        w2_running.set()
        release_w2.wait(WAIT)
        return {"by": "w2"}

    w1_thread = run_hung(queue, hung)
    w2_thread = threading.Thread(target=worker(queue, retry, "w2", heartbeat=False).run_once,
                                 daemon=True)
    try:
        wait_until(lambda: queue.get(job.id).state == "retrying", "the attempt timed out")
        clock.advance(BACKOFF_SECONDS)
        w2_thread.start()
        assert w2_running.wait(WAIT)

        release_w1.set()                  # the stuck call returns while w2 runs the job
        w1_thread.join(WAIT)
        assert not w1_thread.is_alive()
        running = queue.get(job.id)
        assert (running.state, running.lease_owner, running.result) == ("running", "w2", {})

        release_w2.set()
        w2_thread.join(WAIT)
        done = queue.get(job.id)
        assert (done.state, done.result, done.attempts) == ("done", {"by": "w2"}, 2)
    finally:
        release_w1.set()
        release_w2.set()
        w1_thread.join(WAIT)
        if w2_thread.ident is not None:
            w2_thread.join(WAIT)
