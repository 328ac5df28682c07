"""`promoter serve`'s shutdown (promoter.service.shutdown, what runner.serve calls): a job still
running when the grace period is over is handed back, not held under its lease nor dropped.

Real workers on real threads, on both state backends (SQLite file, PostgreSQL server); the
job's handler blocks until the test lets it go on, far past the grace. Replica b is a second
queue on the same store (on PostgreSQL: its own connection pool, as another process has).
"""

from __future__ import annotations

import threading
from typing import Any

from promoter.core.jobs import Job
from promoter.service.job_context import JobContext
from promoter.service.queue import JobKey
from promoter.service.shutdown import stop_background_work
from promoter.service.worker import Worker
from tests.fixtures.state_backends import StateBackend

V7 = JobKey("fraud-detector", "7", "production", "promote")
WAIT = 30.0  # a bound for things that happen at once; never reached when all is well


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

        # Replica b takes it over now, not once a's 60 s lease would have run out.
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
