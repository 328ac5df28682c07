"""`promoter serve`'s shutdown (promoter.service.shutdown, what runner.serve calls): a job still
running when the grace period is over is handed back, not held under its lease nor dropped.

Real workers on real threads, on both state backends (SQLite file, PostgreSQL server); the
job's handler blocks until the test lets it go on, far past the grace. Replica b is a second
queue on the same store (on PostgreSQL: its own connection pool, as another process has).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from promoter.core.jobs import Job
from promoter.service.job_context import JobContext
from promoter.service.queue import JobKey
from promoter.service.shutdown import stop_background_work
from promoter.service.worker import Worker
from tests.fixtures.state_backends import StateBackend

V7 = JobKey("fraud-detector", "7", "production", "promote")
WAIT = 30.0  # a bound for things that happen at once; never reached when all is well
# Long enough that b's first look, right after the let-go, comes well before a's lease ends.
A_LEASE_SECONDS = 4.0
B_LEASE_SECONDS = 60.0


def test_a_job_outliving_the_grace_is_handed_back_and_runs_once_on_another_replica(
        state_backend: StateBackend) -> None:
    replica_a, replica_b = state_backend.queue(), state_backend.queue()
    job = replica_a.enqueue(V7).job
    started, go_on = threading.Event(), threading.Event()
    after_let_go: list[str] = []

    def blocks_past_the_grace(job: Job, ctx: JobContext) -> dict[str, Any]:
        started.set()
        go_on.wait(WAIT)
        try:
            ctx.record_step("pushed", {"by": "a"})  # a side effect after being let go
        except Exception as exc:
            after_let_go.append(type(exc).__name__)
            raise
        return {"ran_on": "a"}

    runs_on_b: list[int] = []

    def finishes(job: Job, ctx: JobContext) -> dict[str, Any]:
        runs_on_b.append(job.attempts)
        ctx.record_step("pushed", {"by": "b"})
        return {"ran_on": "b"}

    worker_a = Worker(replica_a, blocks_past_the_grace, worker_id="replica-a",
                      lease_seconds=60.0)
    stop = threading.Event()
    thread = threading.Thread(target=worker_a.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT)
        let_go = stop_background_work(stop, [worker_a], [thread], grace_seconds=0.2)
        assert [j.id for j in let_go] == [job.id]
        assert thread.is_alive()  # the handler still blocks: the grace did not wait for it

        handed_back = replica_b.get(job.id)
        assert handed_back.state == "retrying"          # neither dropped nor done
        assert handed_back.attempts == 1                # its attempt is counted
        assert handed_back.lease_owner is None
        assert "shut down" in (handed_back.reason or "")

        # Its handler had begun no side effect: replica b takes it over now, not once a's
        # 60 s lease would have run out.
        worker_b = Worker(replica_b, finishes, worker_id="replica-b")
        assert worker_b.run_once()
        assert runs_on_b == [2]
        assert not worker_b.run_once()                  # nothing left: it ran once

        go_on.set()                                     # a's handler wakes up, too late
        thread.join(WAIT)
        assert not thread.is_alive()
        assert after_let_go == ["LeaseLost"]
        done = replica_b.get(job.id)
        assert (done.state, done.result, done.attempts) == ("done", {"ran_on": "b"}, 2)
        assert replica_b.steps(job.id) == {"pushed": {"by": "b"}}
    finally:
        go_on.set()
        thread.join(WAIT)
        replica_a.close()
        replica_b.close()


def test_a_job_let_go_inside_a_side_effect_waits_for_that_side_effects_lease(
        state_backend: StateBackend) -> None:
    """The reviewer's case: a's handler has begun its proposal (before_side_effect granted it a
    lease) and is still sending it when the grace runs out. A request already sent takes effect
    even if a's process exits, so b must not start proposing before that lease has run out,
    just as if a had died; a's later steps are refused and record nothing."""
    replica_a, replica_b = state_backend.queue(), state_backend.queue()
    job = replica_a.enqueue(V7).job
    in_side_effect, go_on = threading.Event(), threading.Event()
    granted: list[float] = []
    merge_requests: list[str] = []
    after_let_go: list[str] = []

    def proposes_past_the_grace(job: Job, ctx: JobContext) -> dict[str, Any]:
        ctx.before_side_effect("propose")
        # No heartbeat runs (below), so the stored lease is exactly the one just granted.
        lease = replica_a.get(job.id).lease_expires_at
        assert lease is not None
        granted.append(lease)
        in_side_effect.set()
        go_on.wait(WAIT)                  # the create-MR request is on its way
        merge_requests.append("a")        # ... and GitLab carries it out
        try:
            ctx.before_side_effect("write-back")
        except Exception as exc:
            after_let_go.append(type(exc).__name__)
            raise
        return {"ran_on": "a"}

    def proposes(job: Job, ctx: JobContext) -> dict[str, Any]:
        ctx.before_side_effect("propose")
        # When b claimed the job: its lease was granted then, for lease_seconds.
        assert job.lease_expires_at is not None
        claimed_at.append(job.lease_expires_at - B_LEASE_SECONDS)
        merge_requests.append("b")
        return {"ran_on": "b"}

    claimed_at: list[float] = []
    # A short lease, so b's wait for it stays short; no heartbeat, so it is not renewed (the
    # grace is far shorter than the lease: a keeps the job until it is let go).
    worker_a = Worker(replica_a, proposes_past_the_grace, worker_id="replica-a",
                      lease_seconds=A_LEASE_SECONDS, heartbeat=False)
    worker_b = Worker(replica_b, proposes, worker_id="replica-b", lease_seconds=B_LEASE_SECONDS)
    stop = threading.Event()
    thread = threading.Thread(target=worker_a.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        assert in_side_effect.wait(WAIT)
        let_go = stop_background_work(stop, [worker_a], [thread], grace_seconds=0.1)
        assert [j.id for j in let_go] == [job.id]
        handed_back = replica_b.get(job.id)
        assert (handed_back.state, handed_back.attempts, handed_back.lease_owner) == \
            ("retrying", 1, None)
        assert "shut down" in (handed_back.reason or "")
        assert handed_back.next_run_at >= granted[0]  # not due before a's lease runs out

        assert not worker_b.run_once()    # a's create-MR may still be in flight: b waits
        assert merge_requests == []

        go_on.set()                       # a's request lands, within its lease
        thread.join(WAIT)
        assert not thread.is_alive()
        assert after_let_go == ["LeaseLost"]  # a's next step is refused

        deadline = time.monotonic() + WAIT
        while not worker_b.run_once() and time.monotonic() < deadline:
            time.sleep(0.05)              # b's poll, until the job comes due
        assert merge_requests == ["a", "b"]
        assert claimed_at[0] >= granted[0] - 1e-6  # b started once a's lease had run out
        done = replica_b.get(job.id)
        assert (done.state, done.result, done.attempts) == ("done", {"ran_on": "b"}, 2)
    finally:
        go_on.set()
        thread.join(WAIT)
        replica_a.close()
        replica_b.close()


def test_a_job_ending_within_the_grace_is_recorded_as_usual(
        state_backend: StateBackend) -> None:
    queue = state_backend.queue()
    job = queue.enqueue(V7).job
    started = threading.Event()
    stop = threading.Event()

    def ends_when_asked_to_stop(job: Job, ctx: JobContext) -> dict[str, Any]:
        started.set()
        stop.wait(WAIT)  # still running when the shutdown begins
        return {"finished": True}

    worker = Worker(queue, ends_when_asked_to_stop, worker_id="replica-a")
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT)
        assert stop_background_work(stop, [worker], [thread], grace_seconds=WAIT) == []
        assert not thread.is_alive()
        finished = queue.get(job.id)
        assert (finished.state, finished.result) == ("done", {"finished": True})
    finally:
        stop.set()
        thread.join(WAIT)
        queue.close()
