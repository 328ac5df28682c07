"""The worker in-process: what each handler outcome does to the job (manual clock, no sleeps)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from promoter.core.jobs import Backoff, Job
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.errors import PermanentError, PolicyDenied, TransientError
from promoter.service.job_context import JobContext
from promoter.service.queue import JobKey, JobQueue, LeaseLost
from promoter.service.worker import Worker, stuck_workers
from promoter.state.db import StateConflict
from tests.core.test_pipeline import MODEL, NAME, RENDERER, World
from tests.core.test_pipeline import world as world  # the pipeline fakes, as a fixture
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import ManualClock

V7 = JobKey("fraud-detector", "7", "production", "promote")


def make_worker(queue: JobQueue, handler: Any, **kwargs: Any) -> Worker:
    options: dict[str, Any] = {"worker_id": "w1", "lease_seconds": 30, "max_attempts": 4,
                               "backoff": Backoff(base_seconds=10, cap_seconds=100),
                               "random": lambda: 0.5, "heartbeat": False}
    options.update(kwargs)
    return Worker(queue, handler, **options)


def test_nothing_due_means_no_work(queue: JobQueue) -> None:
    assert make_worker(queue, lambda job, ctx: {}).run_once() is False


def test_a_handler_result_completes_the_job(queue: JobQueue) -> None:
    job = queue.enqueue(V7, {"alias": "production"}).job
    seen: list[Job] = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        seen.append(job)
        return {"mr": "!12"}

    assert make_worker(queue, handler).run_once()
    done = queue.get(job.id)
    assert (done.state, done.result, done.attempts, done.reason) == ("done", {"mr": "!12"}, 1,
                                                                      None)
    assert seen[0].payload == {"alias": "production"}


def test_transient_failures_back_off_then_succeed(queue: JobQueue, clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    failures = [TransientError("GitLab answered 502"), TransientError("GitLab answered 503")]

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        if failures:
            raise failures.pop(0)
        return {"ok": True}

    worker = make_worker(queue, handler)
    assert worker.run_once()
    first = queue.get(job.id)
    assert (first.state, first.reason) == ("retrying", "TransientError: GitLab answered 502")
    assert first.next_run_at == clock.now() + 5  # 0.5 x base 10
    assert worker.run_once() is False  # not due yet
    clock.advance(5)
    assert worker.run_once()
    second = queue.get(job.id)
    assert second.state == "retrying"
    assert second.next_run_at == clock.now() + 10  # 0.5 x 20: the ceiling doubled
    clock.advance(10)
    assert worker.run_once()
    assert (queue.get(job.id).state, queue.get(job.id).attempts) == ("done", 3)


def test_retry_after_from_the_dependency_is_honoured(queue: JobQueue,
                                                     clock: ManualClock) -> None:
    job = queue.enqueue(V7).job

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        raise TransientError("429 Too Many Requests", retry_after=42)

    make_worker(queue, handler, random=lambda: 0.0).run_once()
    assert queue.get(job.id).next_run_at == clock.now() + 42


def test_a_permanent_error_parks_the_job_with_its_reason(queue: JobQueue) -> None:
    job = queue.enqueue(V7).job

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        raise PermanentError("GitLab answered 403: the token cannot push to main",
                             hint="grant the token Developer access")

    make_worker(queue, handler).run_once()
    dead = queue.get(job.id)
    assert dead.state == "dead"
    assert "403: the token cannot push to main" in (dead.reason or "")


@pytest.mark.parametrize("odd", ["manifests/caf\udce9.yaml", "a NUL \x00 in a body"])
def test_a_reason_no_store_can_hold_as_it_is_still_parks_the_job_once(
        queue: JobQueue, odd: str) -> None:
    """A file name Python decoded with surrogate escapes, a NUL in an error body: UTF-8 cannot
    encode the one and PostgreSQL's text cannot hold the other. The outcome's write failed,
    so a permanent failure ran again after its lease and was parked without its reason."""
    job = queue.enqueue(V7).job
    runs = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        runs.append(1)
        raise PermanentError(f"cannot read {odd}")

    make_worker(queue, handler).run_once()
    dead = queue.get(job.id)
    assert (dead.state, len(runs)) == ("dead", 1)
    assert "cannot read" in (dead.reason or "")
    assert ("\\udce9" in (dead.reason or "")) or ("\\x00" in (dead.reason or ""))


def test_a_policy_denial_is_done_denied(queue: JobQueue) -> None:
    job = queue.enqueue(V7).job

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        raise PolicyDenied(["MLflow tag validation_status must be 'passed'"])

    make_worker(queue, handler).run_once()
    denied = queue.get(job.id)
    assert denied.state == "done"
    assert denied.result == {"outcome": "denied",
                             "reasons": ["MLflow tag validation_status must be 'passed'"]}
    assert "validation_status" in (denied.reason or "")


def test_attempts_run_out_and_the_job_is_dead(queue: JobQueue, clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    calls = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        calls.append(ctx.attempt)
        raise TransientError("MLflow unreachable")

    worker = make_worker(queue, handler, max_attempts=3)
    for _ in range(10):  # bounded; the job must be dead well before
        worker.run_once()
        clock.advance(1000)
    dead = queue.get(job.id)
    assert calls == [1, 2, 3]
    assert dead.state == "dead"
    assert "gave up after 3 attempts" in (dead.reason or "")


def test_a_promotion_that_runs_out_of_attempts_is_tagged_failed_in_mlflow(
        queue: JobQueue, clock: ManualClock, world: World) -> None:
    """The real pipeline on the real queue: each attempt's forge answers 502; only the last
    attempt, after which the job is dead, tells MLflow (not every retry)."""
    world.registry.set_alias(MODEL, "production", "2")
    world.provider.lost_answers = 10
    job = queue.enqueue(JobKey(MODEL, "2", "production", "promote")).job
    pipeline = Pipeline(world.settings.pipeline_config(), Ports(
        world.registry, world.provider, world.ledger, RENDERER, world.images, world.signer))

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        return pipeline.run(PromotionJob(MODEL, "production", "promote", "2"), ctx).as_dict()

    worker = make_worker(queue, handler, max_attempts=3)
    statuses = []
    for _ in range(6):  # bounded; the job is dead after 3
        worker.run_once()
        statuses.append(world.registry.tags(MODEL, "2").get("promoter.production.status"))
        clock.advance(1000)
    assert queue.get(job.id).state == "dead"
    assert statuses[:3] == [None, None, "failed"]
    assert world.registry.tags(MODEL, "2")["promoter.production.reason"] == \
        "gave up retrying: the forge answered 502"


def test_a_job_whose_workers_keep_dying_is_parked(queue: JobQueue, clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    for _ in range(2):  # two workers claim it and vanish without a word
        assert queue.claim("vanishing", lease_seconds=30) is not None
        clock.advance(31)
    ran = []
    make_worker(queue, lambda job, ctx: ran.append(job) or {}, max_attempts=2).run_once()
    dead = queue.get(job.id)
    assert ran == []
    assert dead.state == "dead" and "never finished" in (dead.reason or "")


def test_steps_from_an_earlier_attempt_are_offered_to_the_next(queue: JobQueue,
                                                              clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    builds = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        if ctx.step("build") is None:
            builds.append(ctx.attempt)
            ctx.record_step("build", {"digest": "sha256:feed"})
        if ctx.attempt == 1:
            raise TransientError("registry hiccup after the build")
        return {"digest": ctx.step("build")["digest"]}  # type: ignore[index]

    worker = make_worker(queue, handler)
    worker.run_once()
    clock.advance(100)
    worker.run_once()
    assert builds == [1]
    assert queue.get(job.id).result == {"digest": "sha256:feed"}
    assert queue.steps(job.id) == {"build": {"digest": "sha256:feed"}}


def test_a_worker_that_lost_its_lease_leaves_the_job_to_the_new_holder(
        queue: JobQueue, clock: ManualClock) -> None:
    job = queue.enqueue(V7).job

    def slow_handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        clock.advance(31)  # the lease runs out while we work...
        assert queue.claim("w2", lease_seconds=30) is not None  # ...and w2 takes the job
        ctx.record_step("push", {"late": True})  # LeaseLost: w1 must stop here
        return {"from": "w1"}

    make_worker(queue, slow_handler).run_once()
    current = queue.get(job.id)
    assert (current.state, current.lease_owner) == ("running", "w2")
    assert queue.steps(job.id) == {}


class _TakenOverWhileRendering:
    """The pipeline's renderer, during whose work the lease runs out and w2 takes the job: the
    last step recorded (verify) is behind the worker, only the push and the MR lie ahead."""

    def __init__(self, queue: JobQueue, clock: ManualClock) -> None:
        self.runtimes = RENDERER.runtimes
        self._queue, self._clock = queue, clock

    def render(self, request: Any) -> dict[str, str]:
        self._clock.advance(31)
        assert self._queue.claim("w2", lease_seconds=30) is not None
        return RENDERER.render(request)


def test_a_worker_that_lost_its_lease_before_proposing_pushes_nothing(
        queue: JobQueue, clock: ManualClock, world: World) -> None:
    """The real pipeline's order: policy, image, signature and verify are recorded steps, but
    render and the proposal (push, MR, write-back) record none; the lease check before the
    proposal is all that stands between a stale worker and a second push."""
    world.registry.set_alias(MODEL, "production", "2")
    job = queue.enqueue(JobKey(MODEL, "2", "production", "promote")).job
    ports = Ports(world.registry, world.provider, world.ledger,
                  _TakenOverWhileRendering(queue, clock),  # type: ignore[arg-type]
                  world.images, world.signer)
    pipeline = Pipeline(world.settings.pipeline_config(), ports)

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        return pipeline.run(PromotionJob(MODEL, "production", "promote", "2"), ctx).as_dict()

    make_worker(queue, handler).run_once()
    assert world.provider.proposals == []  # no push, no merge request
    assert [values.get("status") for *_, values in world.registry.writes] == []
    assert world.ledger.get(MODEL, "production") is None
    current = queue.get(job.id)
    assert (current.state, current.lease_owner) == ("running", "w2")


def test_a_worker_that_lost_its_lease_decommissions_nothing(
        queue: JobQueue, clock: ManualClock, world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)
    world.registry.set_alias(MODEL, "production", None)
    proposals_before = len(world.provider.proposals)
    job = queue.enqueue(JobKey(MODEL, "*", "production", "decommission")).job
    ports = Ports(world.registry, world.provider, world.ledger, RENDERER)
    pipeline = Pipeline(world.settings.pipeline_config(), ports)

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        clock.advance(31)  # a long pause (GC, a database blip): w2 takes the job meanwhile
        assert queue.claim("w2", lease_seconds=30) is not None
        return pipeline.run(PromotionJob(MODEL, "production", "decommission"), ctx).as_dict()

    make_worker(queue, handler).run_once()
    assert len(world.provider.proposals) == proposals_before
    assert queue.get(job.id).lease_owner == "w2"


def test_the_heartbeat_stops_a_job_whose_lease_another_worker_took(
        state_backend: StateBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database blip longer than the lease: the heartbeat cannot renew, the lease runs out,
    another worker takes the job. Once the heartbeat reaches the database again and finds
    the job gone, the handler's next step raises LeaseLost, even a step that only reads."""
    lease = 0.6
    queue = state_backend.queue()  # the real clock: the heartbeat is about wall time
    job = queue.enqueue(V7).job
    renew = queue.extend_lease
    blip = threading.Event()

    def unreachable_during_blip(*args: Any, **kwargs: Any) -> float | None:
        if blip.is_set():
            raise TransientError("state database unreachable")
        return renew(*args, **kwargs)

    monkeypatch.setattr(queue, "extend_lease", unreachable_during_blip)
    stopped_at: list[int] = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        blip.set()
        threading.Event().wait(lease * 2)  # the lease runs out...
        assert queue.claim("w2", lease_seconds=60) is not None  # ...and w2 takes the job
        blip.clear()
        for beat in range(50):  # the heartbeat renews every lease / 3
            threading.Event().wait(lease / 6)
            try:
                ctx.step("image")
            except LeaseLost:
                stopped_at.append(beat)
                raise
        return {"from": "w1"}

    Worker(queue, handler, worker_id="w1", lease_seconds=lease).run_once()
    assert stopped_at, "the handler ran to its end after losing its lease"
    assert queue.get(job.id).lease_owner == "w2"
    queue.close()


def test_run_forever_works_until_stopped(queue: JobQueue) -> None:
    keys = [JobKey(f"model-{i}", "1", "staging", "promote") for i in range(5)]
    for key in keys:
        queue.enqueue(key)
    stop = threading.Event()
    done: list[int] = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        done.append(job.id)
        if len(done) == len(keys):
            stop.set()
        return {}

    worker = make_worker(queue, handler, poll_seconds=0.01, heartbeat=True)
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert sorted(done) == sorted(job.id for job in queue.list("done"))
    assert len(done) == len(keys)


def test_the_heartbeat_keeps_a_long_job_leased(state_backend: StateBackend) -> None:
    lease = 1.5  # heartbeats every 0.5 s leave a full second of slack on a busy machine
    queue = state_backend.queue()  # the real clock: the heartbeat is about wall time
    job = queue.enqueue(V7).job
    stolen = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        for _ in range(4):  # runs for two lease lengths
            threading.Event().wait(lease / 2)
            stolen.append(queue.claim("thief", lease_seconds=lease))
        return {}

    Worker(queue, handler, worker_id="w1", lease_seconds=lease).run_once()
    assert stolen == [None] * 4
    assert queue.get(job.id).state == "done"
    queue.close()


# Real seconds: the heartbeat measures an attempt's time on the monotonic clock, not the queue's.
JOB_TIMEOUT = 0.2
V8 = JobKey("fraud-detector", "8", "production", "promote")


def wait_until(condition: Any, what: str) -> None:
    """Poll ``condition`` until it holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def start_hung_attempt(queue: JobQueue, handler: Any, **kwargs: Any) -> threading.Thread:
    """The worker "w1" running ``handler`` in a thread of its own, under JOB_TIMEOUT."""
    worker = make_worker(queue, handler, heartbeat=True, job_timeout_seconds=JOB_TIMEOUT,
                         **kwargs)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    return thread


def test_a_hung_attempt_is_given_up_after_the_job_timeout_and_retried(
        queue: JobQueue, clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    release = threading.Event()

    def hung(job: Job, ctx: JobContext) -> dict[str, Any]:
        release.wait(30)  # a call without a timeout that does not return (until released)
        return {"by": "the hung attempt"}

    thread = start_hung_attempt(queue, hung)
    wait_until(lambda: queue.get(job.id).state == "retrying", "the attempt timed out")
    timed_out = queue.get(job.id)
    assert timed_out.reason is not None
    assert timed_out.reason.startswith("TransientError: timed out after 0.2 s")
    assert (timed_out.attempts, timed_out.lease_owner) == (1, None)  # the attempt counted
    assert timed_out.next_run_at == clock.now() + 5  # backed off like any transient failure
    clock.advance(5)
    assert make_worker(queue, lambda job, ctx: {"by": "w2"}, worker_id="w2").run_once()
    release.set()  # the hung call returns at last: its result must not count
    thread.join(30)
    assert not thread.is_alive()  # and w1's worker thread is free again
    done = queue.get(job.id)
    assert (done.state, done.result, done.attempts) == ("done", {"by": "w2"}, 2)


def test_a_hung_last_attempt_parks_the_job_and_lets_its_deployment_move_on(
        queue: JobQueue) -> None:
    job = queue.enqueue(V7).job
    release = threading.Event()

    def hung(job: Job, ctx: JobContext) -> dict[str, Any]:
        release.wait(30)
        ctx.before_side_effect("push")  # where a handler released late stops
        raise AssertionError("a timed-out attempt went on to its side effect")

    thread = start_hung_attempt(queue, hung, max_attempts=1)
    wait_until(lambda: queue.get(job.id).state == "running", "the attempt started")
    newer = queue.enqueue(V8).job  # the newest request, waiting behind the hung job
    wait_until(lambda: queue.get(job.id).state == "dead", "the attempt timed out")
    assert queue.get(job.id).reason == (
        "gave up after 1 attempts; last error: TransientError: timed out after 0.2 s "
        "(server.job_timeout_seconds); the attempt was given up while its handler was still "
        "running")
    assert make_worker(queue, lambda job, ctx: {}, worker_id="w2").run_once()
    assert queue.get(newer.id).state == "done"
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert queue.get(job.id).state == "dead"


def test_an_enqueue_wakes_an_idle_worker_without_waiting_for_its_poll(queue: JobQueue) -> None:
    stop = threading.Event()
    ran: list[int] = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        ran.append(job.id)
        stop.set()
        return {}

    worker = make_worker(queue, handler, poll_seconds=3600)  # polling alone would never do
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    job = queue.enqueue(V7).job
    thread.join(timeout=30)
    if thread.is_alive():  # don't leave the thread behind when the assertion fails
        stop.set()
        worker.wake()
        thread.join(timeout=30)
    assert ran == [job.id]


def test_wake_ends_the_idle_wait_of_a_stopping_worker(queue: JobQueue) -> None:
    stop = threading.Event()
    worker = make_worker(queue, lambda job, ctx: {}, poll_seconds=3600)
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    stop.set()
    worker.wake()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_handler_returning_garbage_is_an_unexpected_failure(queue: JobQueue) -> None:
    job = queue.enqueue(V7).job
    make_worker(queue, lambda job, ctx: "not a mapping").run_once()
    failed = queue.get(job.id)
    assert failed.state == "retrying"
    assert (failed.reason or "").startswith("unexpected ValueError")


def test_job_events_are_logged_with_structured_fields(queue: JobQueue,
                                                      caplog: Any) -> None:
    job = queue.enqueue(V7).job

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        raise PermanentError("model signature missing")

    with caplog.at_level("INFO", logger="promoter.worker"):
        make_worker(queue, handler).run_once()
    dead = [r for r in caplog.records if r.getMessage().startswith("job dead")]
    assert len(dead) == 1
    assert dead[0].fields["job_id"] == job.id
    assert dead[0].fields["env"] == "production"
    assert "model signature missing" in dead[0].fields["reason"]


def test_run_once_with_a_job_id_runs_that_job_and_leaves_the_others_queued(
        queue: JobQueue) -> None:
    older = queue.enqueue(JobKey("churn", "3", "staging", "promote")).job  # another model's
    mine = queue.enqueue(V7).job
    ran: list[int] = []
    worker = make_worker(queue, lambda job, ctx: ran.append(job.id) or {})
    assert worker.run_once(mine.id)
    assert worker.run_once(mine.id) is False  # done now: nothing else is taken in its place
    assert ran == [mine.id]
    assert queue.get(older.id).state == "queued" and queue.get(older.id).attempts == 0


def test_every_state_change_the_queue_makes_is_checked(queue: JobQueue,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from promoter.core.jobs import DEAD, RETRYING, RUNNING, TRANSITIONS, IllegalTransition

    job = queue.enqueue(V7).job
    assert queue.claim("w1", job_id=job.id) is not None
    # Pretend the state machine forbids running → done: the queue must refuse to write it.
    monkeypatch.setitem(TRANSITIONS, RUNNING, frozenset({RUNNING, RETRYING, DEAD}))
    with pytest.raises(IllegalTransition, match="running → done"):
        queue.complete(job.id, "w1", {})
    assert queue.get(job.id).state == "running"  # rolled back, nothing half-written


def _complete_failing(queue: JobQueue, monkeypatch: pytest.MonkeyPatch, times: int, *,
                      after_commit: bool = False) -> None:
    """queue.complete() fails ``times`` times as a dropped connection does: before the write
    reaches the database or, with ``after_commit``, after it committed (the answer lost)."""
    real_complete, failures = queue.complete, [times]

    def complete(*args: Any, **kwargs: Any) -> None:
        if failures[0] == 0:
            return real_complete(*args, **kwargs)
        failures[0] -= 1
        if after_commit:
            real_complete(*args, **kwargs)
        raise TransientError("the state database is unusable: connection reset by peer")

    monkeypatch.setattr(queue, "complete", complete)


def test_a_transient_failure_writing_the_outcome_does_not_run_the_job_again(
        queue: JobQueue, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection reset while the outcome is written: the write is retried under the lease,
    so the job is done after one run, not handed to a second run once its lease lapses."""
    job = queue.enqueue(V7).job
    runs: list[int] = []
    _complete_failing(queue, monkeypatch, times=1)
    pauses: list[float] = []
    worker = make_worker(queue, lambda job, ctx: runs.append(ctx.attempt) or {"mr": "!12"},
                         sleep=pauses.append)
    assert worker.run_once()
    clock.advance(31)  # were the job still running, its lease would have lapsed by now
    worker.run_once()
    done = queue.get(job.id)
    assert (done.state, done.result, done.attempts) == ("done", {"mr": "!12"}, 1)
    assert runs == [1]
    assert len(pauses) == 1


def test_a_uniqueness_conflict_writing_the_outcome_is_not_retried(
        queue: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken uniqueness rule stays broken: no pauses spent retrying it."""
    queue.enqueue(V7)

    def complete(*args: Any, **kwargs: Any) -> None:
        raise StateConflict("a second open MR for one branch")

    monkeypatch.setattr(queue, "complete", complete)
    pauses: list[float] = []
    worker = make_worker(queue, lambda job, ctx: {"mr": "!12"}, sleep=pauses.append)
    with pytest.raises(StateConflict):
        worker.run_once()
    assert pauses == []


def test_an_outcome_whose_answer_was_lost_is_not_written_twice(
        queue: JobQueue, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    job = queue.enqueue(V7).job
    runs: list[int] = []
    _complete_failing(queue, monkeypatch, times=1, after_commit=True)
    worker = make_worker(queue, lambda job, ctx: runs.append(ctx.attempt) or {"mr": "!12"},
                         sleep=lambda seconds: None)
    assert worker.run_once()
    clock.advance(31)
    worker.run_once()
    assert (queue.get(job.id).state, runs) == ("done", [1])


def test_an_outcome_that_cannot_be_written_leaves_the_job_to_its_lease(
        queue: JobQueue, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    job = queue.enqueue(V7).job
    _complete_failing(queue, monkeypatch, times=10)
    pauses: list[float] = []
    worker = make_worker(queue, lambda job, ctx: {}, settle_retry_delays=(0.1, 0.2),
                         sleep=pauses.append)
    with caplog.at_level("INFO", logger="promoter.worker"), \
            pytest.raises(TransientError, match="connection reset"):
        worker.run_once()
    assert pauses == [0.1, 0.2]
    assert queue.get(job.id).state == "running"
    assert any("left to its lease" in record.getMessage() for record in caplog.records)


def test_a_lease_that_lapsed_while_the_outcome_was_retried_is_left_to_its_new_holder(
        queue: JobQueue, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database stays away longer than the lease: w2 takes the job meanwhile, and w1's
    next attempt to write the outcome finds that out and stops, without an error."""
    job = queue.enqueue(V7).job
    _complete_failing(queue, monkeypatch, times=1)

    def database_away_past_the_lease(seconds: float) -> None:
        clock.advance(31)
        assert queue.claim("w2", lease_seconds=30) is not None

    make_worker(queue, lambda job, ctx: {"from": "w1"},
                sleep=database_away_past_the_lease).run_once()
    current = queue.get(job.id)
    assert (current.state, current.lease_owner) == ("running", "w2")


class _OtherModelProposesMeanwhile:
    """The pipeline's renderer, during whose first render a second worker runs the job of
    another model deriving the same deployment name to its end: that job passed its name
    check after this one did, and before this one wrote its ledger row."""

    def __init__(self, run_other_job: Any) -> None:
        self.runtimes = RENDERER.runtimes
        self._run_other_job = run_other_job

    def render(self, request: Any) -> dict[str, str]:
        run_other_job, self._run_other_job = self._run_other_job, None
        if run_other_job is not None:
            run_other_job()
        return RENDERER.render(request)


def test_two_models_racing_for_one_deployment_name_do_not_both_propose(
        state_backend: StateBackend, clock: ManualClock, world: World) -> None:
    """Two models deriving the name 'fraud-detector' take different work locks, so two
    workers run them at once. The real ledger (SQLite, PostgreSQL) lets only the first
    to propose have the name; the other is refused as it would be one after the other."""
    from promoter.service.ledger import StateLedger

    queue = state_backend.queue(clock)
    world.ledger = StateLedger(state_backend.open())  # type: ignore[assignment]
    world.registry.add("fraud_detector", "1")
    for model, version in ((MODEL, "2"), ("fraud_detector", "1")):
        world.registry.set_alias(model, "production", version)
    first = queue.enqueue(JobKey(MODEL, "2", "production", "promote")).job
    second = queue.enqueue(JobKey("fraud_detector", "1", "production", "promote")).job

    def worker(worker_id: str, renderer: Any) -> Worker:
        pipeline = Pipeline(world.settings.pipeline_config(), Ports(
            world.registry, world.provider, world.ledger, renderer, world.images,
            world.signer))

        def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
            return pipeline.run(PromotionJob(job.key.model, job.key.env, job.key.action,
                                             job.key.version), ctx).as_dict()

        return make_worker(queue, handler, worker_id=worker_id)

    w2 = worker("w2", RENDERER)
    w1 = worker("w1", _OtherModelProposesMeanwhile(lambda: w2.run_once(second.id)))
    assert w1.run_once(first.id)
    assert [proposal.version for proposal in world.provider.proposals] == ["1"]
    assert world.ledger.owners(NAME) == {"fraud_detector"}
    assert (queue.get(second.id).state, queue.get(first.id).state) == ("done", "dead")
    assert "both become deployment 'fraud-detector'" in (queue.get(first.id).reason or "")
    tags = world.registry.tags(MODEL, "2")
    assert tags["promoter.production.status"] == "invalid"
    assert "deploy.name" in tags["promoter.production.reason"]
    queue.close()


def test_a_transient_failure_writing_a_retry_is_retried_too(
        queue: JobQueue, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every outcome goes through the same retried write: here 'retrying' after a 502."""
    job = queue.enqueue(V7).job
    real_retry_later, blips = queue.retry_later, [TransientError("connection reset by peer")]

    def retry_later(*args: Any, **kwargs: Any) -> None:
        if blips:
            raise blips.pop()
        return real_retry_later(*args, **kwargs)

    monkeypatch.setattr(queue, "retry_later", retry_later)

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        raise TransientError("GitLab answered 502")

    assert make_worker(queue, handler, sleep=lambda seconds: None).run_once()
    retrying = queue.get(job.id)
    assert (retrying.state, retrying.reason) == ("retrying", "TransientError: GitLab answered 502")


def test_a_failed_heartbeat_is_tried_again_soon_so_a_short_outage_keeps_the_lease(
        state_backend: StateBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database is unreachable for 70% of the lease, and the attempt meanwhile takes half
    of it to fail (a pool wait). Retried only at the next beat (a third of the lease later,
    past the lease's end), another worker could take the job meanwhile and run it too;
    retried soon, the lease holds."""
    lease = 6.0
    queue = state_backend.queue()  # the real clock: the heartbeat is about wall time
    job = queue.enqueue(V7).job
    renew = queue.extend_lease
    outage_ends = time.monotonic() + 0.7 * lease

    def slow_to_fail(*args: Any, **kwargs: Any) -> float | None:
        if time.monotonic() < outage_ends:
            threading.Event().wait(0.5 * lease)
            raise TransientError("couldn't get a connection after 30 s")
        return renew(*args, **kwargs)

    monkeypatch.setattr(queue, "extend_lease", slow_to_fail)
    stolen = []

    def handler(job: Job, ctx: JobContext) -> dict[str, Any]:
        # Past the lease the claim gave, before a beat a third of a lease after the failure.
        threading.Event().wait(1.08 * lease)
        stolen.append(queue.claim("thief", lease_seconds=60))
        return {}

    Worker(queue, handler, worker_id="w1", lease_seconds=lease).run_once()
    assert stolen == [None]
    assert queue.get(job.id).state == "done"
    queue.close()


def test_liveness_asks_for_a_restart_only_once_every_worker_is_held_by_a_timed_out_attempt(
        queue: JobQueue) -> None:
    """Python cannot end a thread stuck in a call: a replica whose every worker is so held
    runs no job again until restarted, so /healthz (liveness) says so; with one worker free
    (or the call returned) a restart would only cut other attempts short."""
    job = queue.enqueue(V7).job
    release = threading.Event()

    def hung(job: Job, ctx: JobContext) -> dict[str, Any]:
        release.wait(30)
        return {}

    stuck = make_worker(queue, hung, heartbeat=True, job_timeout_seconds=JOB_TIMEOUT)
    free = make_worker(queue, lambda job, ctx: {}, worker_id="w2")
    thread = threading.Thread(target=stuck.run_once)
    thread.start()
    try:
        wait_until(lambda: queue.get(job.id).state == "retrying", "the attempt timed out")
        assert stuck_workers([stuck, free]) is None      # w2 still runs jobs
        reason = stuck_workers([stuck])
        assert reason is not None and f"job {job.id} (" in reason and "restart" in reason
    finally:
        release.set()
        thread.join(30)
    assert stuck_workers([stuck]) is None                # the call returned: free again
