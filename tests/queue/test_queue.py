"""JobQueue against real state databases (SQLite and PostgreSQL, see ``state_backend``):
intake rules, claims, leases, steps, operator actions. Tests that look at the SQLite file
itself take ``tmp_path`` only."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from promoter.errors import TransientError, UserError
from promoter.service.queue import EnqueueResult, JobKey, JobQueue, LeaseLost
from promoter.state.schema import SCHEMA_VERSION
from tests.fixtures.concurrency import run_at_once
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import ManualClock

V7 = JobKey("fraud-detector", "7", "production", "promote")
V8 = JobKey("fraud-detector", "8", "production", "promote")


def test_open_creates_the_state_dir_and_a_wal_database(tmp_path: Path) -> None:
    queue = JobQueue.open(tmp_path / "a" / "b")
    queue.enqueue(V7)
    queue.close()
    db = sqlite3.connect(tmp_path / "a" / "b" / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT model, version, env, action, state FROM jobs").fetchall() == [
        ("fraud-detector", "7", "production", "promote", "queued")]


def test_reopening_keeps_the_jobs(state_backend: StateBackend) -> None:
    first = state_backend.queue()
    job = first.enqueue(V7, {"alias": "production"}).job
    first.close()
    again = state_backend.queue()
    assert again.get(job.id).payload == {"alias": "production"}
    again.close()


def test_a_database_from_a_newer_promoter_is_refused(tmp_path: Path) -> None:
    JobQueue.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UserError, match="newer promoter"):
        JobQueue.open(tmp_path)


def test_setting_the_same_alias_again_is_one_job(queue: JobQueue) -> None:
    first = queue.enqueue(V7, source="mlflow", delivery_id="d-1")
    again = queue.enqueue(V7, source="mlflow", delivery_id="d-2")
    assert first.created and not first.duplicate_delivery
    assert not again.created and not again.duplicate_delivery
    assert again.job.id == first.job.id
    assert len(queue.list()) == 1


def test_a_redelivery_is_recognised_and_creates_nothing(queue: JobQueue) -> None:
    first = queue.enqueue(V7, source="mlflow", delivery_id="d-1")
    redelivered = queue.enqueue(V8, source="mlflow", delivery_id="d-1")
    assert redelivered.duplicate_delivery and not redelivered.created
    assert redelivered.job.id == first.job.id  # the job the first delivery made
    assert [job.key for job in queue.list()] == [V7]


def test_delivery_ids_are_per_source(queue: JobQueue) -> None:
    queue.enqueue(V7, source="mlflow", delivery_id="same")
    queue.claim("w")  # running: a later version needs a job of its own
    other = queue.enqueue(V8, source="databricks", delivery_id="same")
    assert other.created and not other.duplicate_delivery


def finish_next(queue: JobQueue) -> None:
    job = queue.claim("w")
    assert job is not None
    queue.complete(job.id, "w", {})


def test_a_rollback_makes_a_new_job(queue: JobQueue) -> None:
    v7 = queue.enqueue(V7).job
    finish_next(queue)
    v8 = queue.enqueue(V8).job
    finish_next(queue)
    back = queue.enqueue(V7)
    assert back.created
    assert len({v7.id, v8.id, back.job.id}) == 3


def test_a_rollback_asked_again_makes_a_new_job_and_a_queued_one_takes_it_on(
        queue: JobQueue) -> None:
    """The rollback's job finished but its MR was closed unmerged: asked again, the finished
    job does not answer it. A job queued by the alias's webhook meanwhile runs for it, with
    its reason (the job then proposes over a reviewer's close)."""
    rollback = {"source": "cli", "reason": "rollback"}
    first = queue.enqueue(V7, rollback, fresh=True).job
    finish_next(queue)
    assert not queue.enqueue(V7).created           # a re-delivered webhook: covered, as ever
    again = queue.enqueue(V7, rollback, fresh=True)
    assert again.created and again.job.id != first.id
    finish_next(queue)

    webhook = queue.enqueue(V8, {"source": "mlflow"}).job
    taken = queue.enqueue(V7, {**rollback, "actor": "cli:bob"}, fresh=True)
    assert not taken.created and taken.job.id == webhook.id
    assert queue.get(webhook.id).payload == {"source": "cli", "reason": "rollback",
                                             "actor": "cli:bob"}
    assert queue.get(webhook.id).key == V7


def test_a_dead_job_does_not_absorb_a_new_event(queue: JobQueue) -> None:
    job = queue.enqueue(V7).job
    queue.claim("w")
    queue.park(job.id, "w", "PermanentError: 403")
    assert queue.enqueue(V7).created


def test_other_environments_and_models_are_separate(queue: JobQueue) -> None:
    queue.enqueue(V7)
    assert queue.enqueue(JobKey("fraud-detector", "7", "staging", "promote")).created
    assert queue.enqueue(JobKey("churn", "7", "production", "promote")).created


def test_record_delivery_reports_only_the_first_sighting(queue: JobQueue) -> None:
    assert queue.record_delivery("mlflow", "ignored-1")
    assert not queue.record_delivery("mlflow", "ignored-1")
    # A later enqueue under the same id is a duplicate, yet still returns a covering job.
    result = queue.enqueue(V7, source="mlflow", delivery_id="ignored-1")
    assert result.duplicate_delivery
    assert result.job.key == V7


def test_enqueue_async_group_commits_and_each_result_is_durable(
        state_backend: StateBackend) -> None:
    queue = state_backend.queue()
    keys = [JobKey(f"model-{i % 40}", str(i % 3), "production", "promote") for i in range(400)]

    async def send_all() -> list[EnqueueResult]:
        return await asyncio.gather(*[
            queue.enqueue_async(key, {"n": n}, source="mlflow", delivery_id=f"d-{n % 300}")
            for n, key in enumerate(keys)])

    results = asyncio.run(send_all())
    assert sum(r.duplicate_delivery for r in results) == 100
    created = {r.job.id for r in results if r.created}
    # What a fresh connection sees is what was acknowledged: it was committed.
    db = state_backend.open()
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]) == 300
    assert {row[0] for row in db.read(lambda c: c.execute("SELECT id FROM jobs").fetchall())
            } == created
    assert queue._writer.batches < queue._writer.requests  # batched, not one commit each
    queue.close()


def test_enqueue_async_reports_an_unusable_database_as_transient(tmp_path: Path) -> None:
    queue = JobQueue.open(tmp_path)
    holder = sqlite3.connect(tmp_path / "state.db", timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process hogging the write lock
    import promoter.state.sqlite as schema

    original = schema.BUSY_TIMEOUT_SECONDS
    schema.BUSY_TIMEOUT_SECONDS = 0.05
    try:
        with pytest.raises(TransientError, match="could not store"):
            asyncio.run(queue.enqueue_async(V7))
    finally:
        schema.BUSY_TIMEOUT_SECONDS = original
        holder.execute("ROLLBACK")
    assert asyncio.run(queue.enqueue_async(V7)).created  # and it recovers
    queue.close()


def test_claim_takes_the_oldest_due_job_and_leases_it(queue: JobQueue,
                                                      clock: ManualClock) -> None:
    a = queue.enqueue(JobKey("a", "1", "staging", "promote")).job
    queue.enqueue(JobKey("b", "1", "staging", "promote"))
    job = queue.claim("worker-1", lease_seconds=30)
    assert job is not None and job.id == a.id
    assert (job.state, job.attempts, job.lease_owner) == ("running", 1, "worker-1")
    assert job.lease_expires_at == clock.now() + 30


def test_one_job_per_model_and_env_at_a_time(queue: JobQueue) -> None:
    first = queue.enqueue(V7).job
    held = queue.claim("w1")
    assert held is not None and held.id == first.id
    queue.enqueue(V8)
    queue.enqueue(JobKey("fraud-detector", "8", "staging", "promote"))
    other = queue.claim("w2")
    assert other is not None and other.key.env == "staging"  # production waits
    assert queue.claim("w3") is None
    queue.complete(first.id, "w1", {})
    nxt = queue.claim("w3")
    assert nxt is not None and nxt.key == V8


def test_a_retrying_job_holds_back_newer_jobs_of_its_model_and_env(
        queue: JobQueue, clock: ManualClock) -> None:
    first = queue.enqueue(V7).job
    queue.enqueue(V8)
    queue.claim("w")
    queue.retry_later(first.id, "w", "GitLab 503", delay=60)
    assert queue.claim("w") is None  # v8 waits its turn: arrival order per deployment
    clock.advance(60)
    again = queue.claim("w")
    assert again is not None and again.id == first.id and again.attempts == 2


def test_an_expired_lease_lets_another_worker_take_the_job(queue: JobQueue,
                                                          clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    queue.claim("dead-worker", lease_seconds=10)
    assert queue.claim("w2", lease_seconds=10) is None
    clock.advance(10.5)
    taken = queue.claim("w2", lease_seconds=10)
    assert taken is not None and taken.id == job.id and taken.attempts == 2
    with pytest.raises(LeaseLost):
        queue.complete(job.id, "dead-worker", {"late": True})
    queue.complete(job.id, "w2", {"ok": True})
    assert queue.get(job.id).result == {"ok": True}


def test_extend_lease_keeps_the_job_and_fails_for_others(queue: JobQueue,
                                                         clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    queue.claim("w1", lease_seconds=10)
    clock.advance(8)
    assert queue.extend_lease(job.id, "w1", 10)
    clock.advance(8)
    assert queue.claim("w2") is None
    assert not queue.extend_lease(job.id, "w2", 10)


def test_steps_are_recorded_under_the_job_and_survive_reopening(
        state_backend: StateBackend) -> None:
    queue = state_backend.queue()
    job = queue.enqueue(V7).job
    queue.claim("w")
    queue.record_step(job.id, "render", {"files": 3})
    queue.record_step(job.id, "build", {"digest": "sha256:ab"}, worker_id="w")
    queue.record_step(job.id, "render", {"files": 4})
    queue.close()
    reopened = state_backend.queue()
    assert reopened.steps(job.id) == {"render": {"files": 4}, "build": {"digest": "sha256:ab"}}
    with pytest.raises(LeaseLost):
        reopened.record_step(job.id, "sign", {}, worker_id="not-the-holder")
    with pytest.raises(UserError):
        reopened.record_step(9999, "sign", {})
    reopened.close()


def test_outcomes_are_recorded(queue: JobQueue, clock: ManualClock) -> None:
    job = queue.enqueue(V7).job
    queue.claim("w")
    queue.retry_later(job.id, "w", "registry down", delay=30)
    retrying = queue.get(job.id)
    assert (retrying.state, retrying.reason, retrying.lease_owner) == (
        "retrying", "registry down", None)
    assert retrying.next_run_at == clock.now() + 30
    clock.advance(30)
    queue.claim("w")
    queue.park(job.id, "w", "PermanentError: 403")
    assert (queue.get(job.id).state, queue.get(job.id).reason) == ("dead", "PermanentError: 403")


def test_retry_requeues_dead_jobs_only(queue: JobQueue) -> None:
    job = queue.enqueue(V7).job
    with pytest.raises(UserError, match="is queued"):
        queue.retry(job.id)
    queue.claim("w")
    queue.park(job.id, "w", "gave up")
    again = queue.retry(job.id)
    assert (again.state, again.attempts) == ("queued", 0)
    assert queue.claim("w") is not None
    with pytest.raises(UserError, match="no job"):
        queue.retry(424242)


def test_a_denied_job_can_be_retried(queue: JobQueue) -> None:
    job = queue.enqueue(V7).job
    queue.claim("w")
    queue.complete(job.id, "w", {"outcome": "denied", "reasons": ["tag missing"]})
    assert queue.retry(job.id).state == "queued"


def test_list_filters_and_counts(queue: JobQueue) -> None:
    done = queue.enqueue(V7).job
    queue.enqueue(JobKey("churn", "1", "staging", "promote"))
    queue.claim("w")
    queue.complete(done.id, "w", {})
    assert [job.id for job in queue.list("done")] == [done.id]
    assert len(queue.list()) == 2 and len(queue.list(limit=1)) == 1
    assert queue.counts_by_state() == {"queued": 1, "running": 0, "retrying": 0, "done": 1,
                                       "dead": 0}
    with pytest.raises(UserError, match="unknown job state"):
        queue.list("finished")
    with pytest.raises(UserError, match="no job"):
        queue.get(31337)


def test_ping_reports_a_broken_database_as_transient(tmp_path: Path) -> None:
    queue = JobQueue.open(tmp_path)
    queue.ping()
    queue.close()
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(TransientError, match="unusable"):
        JobQueue.open(tmp_path).ping()


def test_an_older_schema_is_migrated_on_open_keeping_its_jobs(tmp_path: Path) -> None:
    from promoter.state.schema import MIGRATIONS

    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute("INSERT INTO jobs (model, version, env, action, state, created_at, updated_at, "
               "next_run_at) VALUES ('m', '1', 'staging', 'promote', 'queued', 1, 1, 1)")
    db.close()
    queue = JobQueue.open(tmp_path)
    assert [job.key for job in queue.list()] == [JobKey("m", "1", "staging", "promote")]
    queue.close()
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'deliveries_by_age'"
                      ).fetchone() is not None


def test_delivery_ids_are_forgotten_after_their_retention(queue: JobQueue,
                                                         clock: ManualClock) -> None:
    queue.enqueue(V7, source="mlflow", delivery_id="old")
    clock.advance(3600)
    queue.enqueue(V8, source="mlflow", delivery_id="recent")
    assert queue.prune_deliveries(older_than_seconds=1800) == 1
    assert queue.record_delivery("mlflow", "old")  # forgotten: seen as new
    assert not queue.record_delivery("mlflow", "recent")


def test_many_first_opens_at_once_create_one_schema(state_backend: StateBackend) -> None:
    def open_and_enqueue(index: int) -> None:
        queue = state_backend.queue()  # a first open: creates the schema
        queue.enqueue(JobKey(f"model-{index}", "1", "staging", "promote"))
        queue.close()

    _, errors = run_at_once(6, open_and_enqueue)
    assert errors == []
    queue = state_backend.queue()
    assert len(queue.list()) == 6
    queue.close()


V9 = JobKey("fraud-detector", "9", "production", "promote")


def test_a_queued_job_covers_a_burst_and_names_its_newest_version(queue: JobQueue) -> None:
    first = queue.enqueue(V7)
    later = [queue.enqueue(V8), queue.enqueue(V9), queue.enqueue(V8)]
    assert first.created and not any(result.created for result in later)
    assert {result.job.id for result in later} == {first.job.id}
    assert queue.get(first.job.id).key.version == "8"   # the newest event's version
    assert len(queue.list()) == 1


def test_a_running_jobs_successor_waits_for_the_burst_to_settle(state_backend: StateBackend,
                                                                 clock: ManualClock) -> None:
    queue = state_backend.queue(clock, settle_seconds=5.0)
    running = queue.enqueue(V7).job
    assert queue.claim("w1") is not None
    successor = queue.enqueue(V8)
    assert successor.created and successor.job.next_run_at == clock.now() + 5
    clock.advance(3)
    covered = queue.enqueue(V9)
    assert not covered.created and covered.job.id == successor.job.id
    assert covered.job.next_run_at == clock.now() + 5   # each event pushes the start back
    queue.complete(running.id, "w1", {})
    clock.advance(4.9)
    assert queue.claim("w2") is None                    # the burst may not be over
    assert 0 < (queue.seconds_until_due() or 0) <= 0.11
    clock.advance(0.2)
    settled = queue.claim("w2")
    assert settled is not None and settled.id == successor.job.id and settled.key == V9
    queue.close()
