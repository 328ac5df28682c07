"""A job let go (its handler interrupted: Ctrl-C, a shutdown) is taken over at once: its
lease ends now and idle workers are told, in this process and, on PostgreSQL, in every
replica (NOTIFY), instead of finding it at their fallback poll (15 s in serve). Unless the
handler was inside a side effect: then not before the lease granted for it has run out."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from promoter.core.jobs import Job
from promoter.service.job_context import JobContext
from promoter.service.queue import JobKey, JobQueue
from promoter.service.queue_ops import WORK_CHANNEL
from promoter.service.worker import Worker
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import ManualClock

V7 = JobKey("fraud-detector", "7", "production", "promote")
FALLBACK_POLL_SECONDS = 15.0  # serve's idle workers' poll
# Far above a wake-up's few milliseconds, far below the poll: no flaky timing.
TAKEOVER_BOUND_SECONDS = FALLBACK_POLL_SECONDS / 2


def interrupted(job: Job, ctx: JobContext) -> dict[str, Any]:
    raise KeyboardInterrupt


def test_letting_go_wakes_this_process_idle_workers(queue: JobQueue) -> None:
    job = queue.enqueue(V7).job
    assert queue.claim("a", 60.0) is not None
    seen = queue.work_generation()
    assert not queue.let_go(job.id, "b")                 # not b's: nothing changes
    assert queue.work_generation() == seen
    assert queue.let_go(job.id, "a")
    assert queue.work_generation() != seen               # a waiting worker looks again
    taken = queue.claim("b", 60.0)
    assert taken is not None and (taken.id, taken.state) == (job.id, "running")


def test_letting_go_notifies_the_other_replicas(state_backend: StateBackend) -> None:
    if state_backend.url is None:
        pytest.skip("SQLite: other processes poll; there is no cross-process notification")
    queue = state_backend.queue()
    job = queue.enqueue(V7).job
    assert queue.claim("replica-a", 60.0) is not None
    # Listening from now on: the enqueue's notification went to nobody.
    with psycopg.connect(state_backend.url, autocommit=True) as replica_b:
        replica_b.execute(f"LISTEN {WORK_CHANNEL}")
        assert queue.let_go(job.id, "replica-a")
        received = [note.channel for note in replica_b.notifies(timeout=10.0, stop_after=1)]
    assert received == [WORK_CHANNEL]
    queue.close()


def test_an_idle_replica_takes_over_an_interrupted_job_well_before_its_poll(
        state_backend: StateBackend) -> None:
    if state_backend.url is None:
        pytest.skip("SQLite: one host; its other processes poll")
    a, b = state_backend.queue(), state_backend.queue()   # two replicas, the database's clock
    a.enqueue(V7)
    taken_over = threading.Event()

    def take(job: Job, ctx: JobContext) -> dict[str, Any]:
        taken_over.set()
        return {}

    def interrupted_once_b_is_idle(job: Job, ctx: JobContext) -> dict[str, Any]:
        # a holds the job now: b starts, finds nothing it could claim and waits, once its
        # listener's first wake-up (LISTEN in effect) has been and gone. Then Ctrl-C.
        thread.start()
        deadline = time.monotonic() + 10.0
        while b.work_generation() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        raise KeyboardInterrupt

    worker_a = Worker(a, interrupted_once_b_is_idle, worker_id="replica-a", heartbeat=False)
    worker_b = Worker(b, take, worker_id="replica-b", poll_seconds=FALLBACK_POLL_SECONDS,
                      heartbeat=False)
    stop = threading.Event()
    thread = threading.Thread(target=worker_b.run_forever, args=(stop,), daemon=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            worker_a.run_once()
        assert taken_over.wait(TAKEOVER_BOUND_SECONDS), \
            f"replica b did not take the job over within {TAKEOVER_BOUND_SECONDS} s"
    finally:
        stop.set()
        worker_b.wake()
        if thread.ident is not None:  # started
            thread.join(5)
        a.close()
        b.close()


def test_ctrl_c_inside_a_side_effect_hands_the_job_back_due_once_its_lease_runs_out(
        queue: JobQueue, clock: ManualClock) -> None:
    """`promoter promote` runs the handler on the main thread: Ctrl-C lands in the middle of
    its proposal. The create-MR request may already be on GitLab, which carries it out though
    promote exits: a replica must not propose the same change before that request's lease
    would have run out, just as if promote had died."""
    job = queue.enqueue(V7).job
    granted: list[float] = []

    def interrupted_while_proposing(job: Job, ctx: JobContext) -> dict[str, Any]:
        ctx.before_side_effect("propose")
        lease = queue.get(job.id).lease_expires_at  # the manual clock stands still meanwhile
        assert lease is not None
        granted.append(lease)
        raise KeyboardInterrupt           # the request was sent; its answer never read

    proposals: list[int] = []

    def proposes(job: Job, ctx: JobContext) -> dict[str, Any]:
        ctx.before_side_effect("propose")
        proposals.append(job.attempts)
        return {}

    with pytest.raises(KeyboardInterrupt):
        Worker(queue, interrupted_while_proposing, worker_id="cli", lease_seconds=60.0,
               heartbeat=False).run_once()
    handed_back = queue.get(job.id)
    assert (handed_back.state, handed_back.attempts, handed_back.lease_owner) == \
        ("retrying", 1, None)
    assert handed_back.next_run_at >= granted[0]
    replica = Worker(queue, proposes, worker_id="replica", heartbeat=False)
    assert not replica.run_once()         # GitLab may still be creating the MR: wait
    clock.advance(granted[0] - clock.now())
    assert replica.run_once()             # the lease is over: as after a crash, take over
    assert proposals == [2]
    assert queue.get(job.id).state == "done"


def test_ctrl_c_before_any_side_effect_hands_the_job_back_due_at_once(
        queue: JobQueue) -> None:
    job = queue.enqueue(V7).job
    with pytest.raises(KeyboardInterrupt):
        Worker(queue, interrupted, worker_id="cli", lease_seconds=60.0,
               heartbeat=False).run_once()
    assert queue.get(job.id).state == "retrying"
    taken = queue.claim("replica", 60.0)  # the clock has not moved: due now
    assert taken is not None and taken.id == job.id
