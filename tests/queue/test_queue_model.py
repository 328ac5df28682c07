"""Random operation sequences against a real queue (SQLite file and PostgreSQL database),
checking the invariants every step:
only legal state changes, one live job per (model, env), arrival order per deployment, and
enqueue's coalescing rule."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from promoter.core.jobs import TERMINAL_STATES, can_transition
from promoter.service.queue import Job, JobKey, JobQueue, LeaseLost
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import ManualClock

keys = st.builds(JobKey, model=st.just("fraud"),
                 version=st.sampled_from(["1", "2"]),
                 env=st.sampled_from(["staging", "production"]),
                 action=st.sampled_from(["promote", "decommission"]))
workers = st.sampled_from(["w1", "w2", "w3"])


class QueueMachine(RuleBasedStateMachine):
    backend: StateBackend | None = None  # the PostgreSQL database to use, if any (see below)

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = ManualClock()
        if self.backend is None or self.backend.url is None:
            self.queue = JobQueue.open(Path(self.tmp.name), clock=self.clock)
        else:  # one database per test; every example starts from empty tables
            db = self.backend.open()
            db.write(lambda conn: conn.execute(
                "TRUNCATE jobs, deliveries, job_steps RESTART IDENTITY CASCADE"))
            self.queue = JobQueue(db, self.clock)
        self.last_seen: dict[int, str] = {}
        self.held: dict[int, str] = {}  # job id → worker that claimed it

    def teardown(self) -> None:
        self.queue.close()
        self.tmp.cleanup()

    def jobs(self) -> list[Job]:
        return self.queue.list(limit=10_000)

    @rule(key=keys, delivery=st.sampled_from([None, "a", "b", "c"]))
    def enqueue(self, key: JobKey, delivery: str | None) -> None:
        before = self.jobs()
        seen_delivery = delivery is not None and self.queue.record_delivery("probe", delivery)
        assert seen_delivery in (True, False)
        result = self.queue.enqueue(key, source="mlflow", delivery_id=delivery)
        newest = next((j for j in before if (j.key.model, j.key.env) == (key.model, key.env)),
                      None)
        if result.duplicate_delivery:
            assert not result.created
        else:
            # A job that has not started covers every later event of its action (it resolves
            # the alias when it runs); otherwise only the same key, unless that job died.
            covered = newest is not None and (
                (newest.state == "queued" and newest.key.action == key.action)
                or (newest.key == key and newest.state != "dead"))
            assert result.created == (not covered)

    @rule(worker=workers, lease=st.sampled_from([5.0, 30.0]))
    def claim(self, worker: str, lease: float) -> None:
        was = {job.id: job.state for job in self.jobs()}
        job = self.queue.claim(worker, lease)
        if job is None:
            return
        self.held[job.id] = worker
        now = self.clock.now()
        for other in self.jobs():
            if other.id == job.id or (other.key.model, other.key.env) != (job.key.model,
                                                                          job.key.env):
                continue
            if was.get(job.id) == "running":
                # A takeover of an expired lease: its job may have side effects under way, so
                # older jobs merely waiting (an operator's `jobs retry` made one unfinished
                # again while this one ran) do not hold it back; a live lease, or an older job
                # running, does (queue_ops._CLAIM_SQL).
                assert other.state != "running" or (
                    other.id > job.id and other.lease_expires_at is not None
                    and other.lease_expires_at <= now), \
                    f"job {job.id} taken over while job {other.id} of its deployment runs"
                continue
            assert not (other.id < job.id and other.state not in TERMINAL_STATES), \
                f"job {job.id} overtook unfinished job {other.id} of its deployment"

        assert job.lease_expires_at == now + lease

    @precondition(lambda self: self.held)
    @rule(data=st.data(), outcome=st.sampled_from(["complete", "retry_later", "park"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.held)))
        worker = self.held.pop(job_id)
        current = self.queue.get(job_id)
        try:
            if outcome == "complete":
                self.queue.complete(job_id, worker, {"by": worker})
            elif outcome == "retry_later":
                self.queue.retry_later(job_id, worker, "flaky", delay=10)
            else:
                self.queue.park(job_id, worker, "broken")
        except LeaseLost:
            assert current.state != "running" or current.lease_owner != worker
        else:
            assert current.state == "running" and current.lease_owner == worker

    @rule(seconds=st.sampled_from([1.0, 6.0, 11.0, 31.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(data=st.data())
    def operator_retry(self, data: st.DataObject) -> None:
        jobs = self.jobs()
        if not jobs:
            return
        job = data.draw(st.sampled_from(jobs))
        try:
            self.queue.retry(job.id)
        except Exception:
            assert job.state in ("queued", "running") or (
                job.state == "done" and job.result.get("outcome") != "denied")

    @invariant()
    def only_legal_state_changes(self) -> None:
        for job in self.jobs():
            before = self.last_seen.get(job.id)
            if before is not None and before != job.state:
                # Each rule makes at most one move, so every observed change is one transition.
                assert can_transition(before, job.state), f"job {job.id}: {before} → {job.state}"
            self.last_seen[job.id] = job.state

    @invariant()
    def one_live_job_per_deployment(self) -> None:
        now = self.clock.now()
        live: dict[tuple[str, str], int] = {}
        for job in self.jobs():
            if job.state == "running" and (job.lease_expires_at or 0) > now:
                deployment = (job.key.model, job.key.env)
                assert deployment not in live, f"jobs {live[deployment]} and {job.id} both run"
                live[deployment] = job.id

    @invariant()
    def counts_add_up(self) -> None:
        assert sum(self.queue.counts_by_state().values()) == len(self.jobs())


def test_queue_state_machine(state_backend: StateBackend) -> None:
    bound = type("QueueMachineOn" + state_backend.name.title(), (QueueMachine,),
                 {"backend": state_backend})
    run_state_machine_as_test(bound, settings=settings(max_examples=80, stateful_step_count=25,
                                                        deadline=None))
