"""The durable job queue, in the state database (promoter.state: SQLite or PostgreSQL).

Safe across threads (each thread gets its own connection) and processes, on one host (SQLite:
every write is one ``BEGIN IMMEDIATE`` transaction) or many (PostgreSQL: claims lock the row
they take with ``FOR UPDATE SKIP LOCKED``; a job's outcome is written only by its lease
holder), so two workers can never claim the same job. A worker holds a job under a lease; if it
dies — even by SIGKILL — the lease expires and another worker re-claims the job. The decisions
(coalescing, legal state changes) come from promoter.core.jobs; every state change goes through
``check_transition``, so an illegal one is a loud bug.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from promoter.core.jobs import (
    DEAD,
    DONE,
    QUEUED,
    RETRYING,
    RUNNING,
    STATES,
    Job,
    JobKey,
    JobState,
    check_transition,
)
from promoter.errors import PromoterError, UserError
from promoter.ports.clock import Clock, SystemClock
from promoter.service import queue_ops
from promoter.service.queue_ops import WORK_CHANNEL, EnqueueResult, row_to_job, to_json
from promoter.service.queue_writer import GroupCommitWriter
from promoter.state import deliveries
from promoter.state.db import Connection, StateDB
from promoter.state.deliveries import DELIVERY_RETENTION_SECONDS
from promoter.state.storable import storable

__all__ = ["EnqueueResult", "Job", "JobKey", "JobQueue", "LeaseLost"]

T = TypeVar("T")


class LeaseLost(PromoterError):
    """This worker no longer holds the job (its lease expired and someone else took it)."""

    kind = "lease_lost"


class JobQueue:
    def __init__(self, db: StateDB, clock: Clock | None = None, *,
                 settle_seconds: float = 0.0) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()
        # Leases and due times are compared across replicas. On PostgreSQL they follow the
        # database's clock, the one all replicas share, so clock skew between replicas cannot
        # let one take another's live lease, nor make replicas disagree on when a job (a
        # backoff, a debounced successor) is due; on SQLite (one host) the system clock is that
        # one clock. A clock passed in (tests, a simulation) governs instead.
        self._on_database_clock = clock is None
        self.settle_seconds = settle_seconds  # burst debounce (queue_ops.enqueue); serve sets it
        self._writer = GroupCommitWriter(db, self._now, settle_seconds=settle_seconds)
        # In-process wake-ups, so a worker starts a new job at once instead of at its next poll.
        # Other processes' work: a LISTEN connection (PostgreSQL) or polling (SQLite).
        self._work = threading.Condition()
        self._work_generation = 0
        self._stop_listening: Callable[[], None] | None = None

    @classmethod
    def open(cls, state_dir: Path, clock: Clock | None = None, *,
             settle_seconds: float = 0.0) -> JobQueue:
        return cls(StateDB.open(state_dir), clock, settle_seconds=settle_seconds)

    @property
    def db_path(self) -> Path:
        return self.db.path

    @property
    def wakes_across_processes(self) -> bool:
        """True when other processes' enqueues wake this one's workers (no fast polling)."""
        return self.db.wakes_other_processes

    def close(self) -> None:
        with self._work:
            stop, self._stop_listening = self._stop_listening, None
        if stop is not None:
            stop()
        self._writer.close()
        self.db.close()

    # -- intake ---------------------------------------------------------------------------

    def enqueue(self, key: JobKey, payload: dict[str, Any] | None = None, *, source: str = "",
                delivery_id: str | None = None, fresh: bool = False) -> EnqueueResult:
        """Store a delivery durably; a new job only if no unfinished-or-done job covers it
        (``fresh``: only an unfinished one; see core.jobs.needs_new_job)."""
        result = self._write(lambda conn: queue_ops.enqueue(
            conn, self._now(conn), key, payload, source, delivery_id, self.settle_seconds,
            fresh=fresh))
        if result.created:
            self.notify_work()
        return result

    async def enqueue_async(self, key: JobKey, payload: dict[str, Any] | None = None, *,
                            source: str = "", delivery_id: str | None = None) -> EnqueueResult:
        """enqueue() for the event loop: group-committed, resolved once its batch is durable."""
        result = await self._writer.submit(key, payload, source, delivery_id)
        if result.created:
            self.notify_work()
        return result

    def work_generation(self) -> int:
        """A counter that changes whenever this process adds or frees work (see wait_for_work)."""
        with self._work:
            return self._work_generation

    def notify_work(self) -> None:
        with self._work:
            self._work_generation += 1
            self._work.notify_all()

    def seconds_until_due(self) -> float | None:
        """How long until a waiting job comes due (a worker sleeps no longer than that)."""
        return self.db.read(lambda conn: queue_ops.seconds_until_due(conn, self._now(conn)))

    def wait_for_work(self, seen_generation: int, timeout: float) -> bool:
        """Block until work_generation() moves past ``seen_generation`` or ``timeout`` passes
        (an enqueue in this process or, on PostgreSQL, in any other)."""
        with self._work:
            if self._stop_listening is None:  # the first waiter starts listening
                self._stop_listening = self.db.listen(WORK_CHANNEL, self.notify_work)
            return self._work.wait_for(lambda: self._work_generation != seen_generation,
                                       timeout)

    def record_delivery(self, source: str, delivery_id: str) -> bool:
        """Remember a delivery that made no job (e.g. an ignored event); True the first time."""
        return self._write(lambda conn: deliveries.claim(conn, source, delivery_id,
                                                         self._now(conn)))

    def prune_deliveries(self, older_than_seconds: float = DELIVERY_RETENTION_SECONDS) -> int:
        """Forget delivery ids received longer ago than that; returns how many were dropped."""
        return self._write(lambda conn: deliveries.prune(
            conn, self._now(conn) - older_than_seconds))

    # -- workers --------------------------------------------------------------------------

    def claim(self, worker_id: str, lease_seconds: float = 60.0, *,
              job_id: int | None = None) -> Job | None:
        """The oldest due job (or, with ``job_id``, that job only, if it is due), now held
        by ``worker_id`` under a lease; None when nothing (or not that job) can run now."""
        return self._write(lambda conn: queue_ops.claim(
            conn, self._now(conn), worker_id, lease_seconds, job_id=job_id))

    def extend_lease(self, job_id: int, worker_id: str, lease_seconds: float) -> float | None:
        """A lease of ``lease_seconds`` from now, if ``worker_id`` still holds the job: its
        new expiry (the time due times are measured in, see __init__), or None when
        ``worker_id`` no longer holds the job."""
        def extend(conn: Connection) -> float | None:
            now = self._now(conn)
            expires = now + lease_seconds
            extended = conn.execute(
                "UPDATE jobs SET lease_expires_at = ?, updated_at = ? "
                "WHERE id = ? AND state = ? AND lease_owner = ?",
                (expires, now, job_id, RUNNING, worker_id)).rowcount == 1
            return expires if extended else None

        return self._write(extend)

    def let_go(self, job_id: int, worker_id: str,
               reason: str = "its worker was interrupted while it ran", *,
               not_before: float | None = None) -> bool:
        """Hand a running job of ``worker_id`` back now (its handler was interrupted, or a
        shutdown's grace ran out): ``retrying``, no lease, ``reason`` kept, the attempt
        counted, due at once or, with ``not_before`` (in the time due times are measured in:
        the expiry of a lease the attempt was granted for a side effect it may still be
        doing), not before then. Another worker takes it over then rather than after the
        whole lease. Not ``queued``: a queued job takes on newer events (queue_ops._cover, a
        new version) while the step results this attempt recorded belong to the version it
        ran for. Idle workers are woken, as by _finish: in this process, and on PostgreSQL in
        every replica (NOTIFY), which would otherwise wait for their fallback poll (a job due
        later shortens their wait to its due time, seconds_until_due)."""
        def release(conn: Connection) -> bool:
            now = self._now(conn)
            due = now if not_before is None else max(now, not_before)
            if conn.execute(
                    "UPDATE jobs SET state = ?, next_run_at = ?, updated_at = ?, reason = ?, "
                    "lease_owner = NULL, lease_expires_at = NULL "
                    "WHERE id = ? AND state = ? AND lease_owner = ?",
                    (check_transition(job_id, RUNNING, RETRYING), due, now, storable(reason),
                     job_id, RUNNING, worker_id)).rowcount != 1:
                return False
            conn.notify(WORK_CHANNEL)  # the job is claimable now, or idle workers wait for it
            return True

        released = self._write(release)
        if released:
            self.notify_work()
        return released

    def record_step(self, job_id: int, step: str, result: dict[str, Any], *,
                    worker_id: str | None = None) -> None:
        """Store one step's result (replacing an earlier one). With ``worker_id``, only while
        that worker still holds the job's lease (LeaseLost otherwise)."""
        def upsert(conn: Connection) -> None:
            now = self._now(conn)
            if worker_id is not None:
                self._check_holder(conn, job_id, worker_id)
            elif conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise UserError(f"no job with id {job_id}")
            conn.execute(
                "INSERT INTO job_steps (job_id, name, result, recorded_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job_id, name) DO UPDATE SET result = excluded.result, "
                "recorded_at = excluded.recorded_at", (job_id, step, to_json(result), now))

        self._write(upsert)

    def steps(self, job_id: int) -> dict[str, dict[str, Any]]:
        """Step results recorded so far, in the order they were first recorded."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT name, result FROM job_steps WHERE job_id = ? ORDER BY recorded_at, name",
            (job_id,)).fetchall())
        return {row["name"]: json.loads(row["result"]) for row in rows}

    def complete(self, job_id: int, worker_id: str, result: dict[str, Any], *,
                 reason: str | None = None) -> None:
        self._finish(job_id, worker_id, DONE, reason=reason, result=result)

    def retry_later(self, job_id: int, worker_id: str, reason: str, delay: float, *,
                    not_before: float | None = None) -> None:
        """Due again after ``delay`` and, with ``not_before`` (queue time, as in let_go: the
        expiry of a lease granted for a side effect a timed-out attempt may still be doing),
        not before then either."""
        self._finish(job_id, worker_id, RETRYING, reason=reason, delay=max(0.0, delay),
                     not_before=not_before)

    def park(self, job_id: int, worker_id: str, reason: str) -> None:
        self._finish(job_id, worker_id, DEAD, reason=reason)

    # -- operators ------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        job = self._read(lambda conn: queue_ops.fetch_job(conn, job_id))
        if job is None:
            raise UserError(f"no job with id {job_id}", hint="list jobs with `promoter jobs list`")
        return job

    def list(self, state: str | None = None, limit: int = 100) -> builtins.list[Job]:
        """Newest first, optionally only those in ``state``."""
        if state is not None and state not in STATES:
            raise UserError(f"unknown job state {state!r}", hint="one of: " + ", ".join(STATES))
        sql, params = "SELECT * FROM jobs", ()  # type: tuple[str, tuple[Any, ...]]
        if state is not None:
            sql, params = sql + " WHERE state = ?", (state,)
        rows = self._read(lambda conn: conn.execute(sql + " ORDER BY id DESC LIMIT ?",
                                                    (*params, max(0, limit))).fetchall())
        return [row_to_job(row) for row in rows]

    def newest_keys(self) -> dict[tuple[str, str], JobKey]:
        """The key the newest job of every (model, env) stands for, whatever its state: what
        was last asked of each deployment, or, once done, the version its run resolved (see
        core.jobs.settled_key; one query; jobs are never deleted)."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT j.model, j.version, j.env, j.action, j.state, j.result FROM jobs AS j JOIN "
            "(SELECT MAX(id) AS id FROM jobs GROUP BY model, env) AS newest "
            "ON j.id = newest.id").fetchall())
        return {(str(row["model"]), str(row["env"])): queue_ops.stands_for(row) for row in rows}

    def retry(self, job_id: int) -> Job:
        """Queue a dead, retrying or policy-denied job to run now, with a fresh attempt count."""
        def requeue(conn: Connection) -> Job:
            now = self._now(conn)
            job = queue_ops.fetch_job(conn, job_id)
            if job is None:
                raise UserError(f"no job with id {job_id}",
                                hint="list jobs with `promoter jobs list`")
            # A claim of a newer job of this (model, env) decides under this lock whether an
            # older one is unfinished: without it, both jobs could run at once (PostgreSQL).
            conn.lock(queue_ops.work_lock(job.key.model, job.key.env))
            job = queue_ops.fetch_job(conn, job_id) or job  # as it is now, under the lock
            denied = job.state == DONE and job.result.get("outcome") == "denied"
            if job.state not in (DEAD, RETRYING) and not denied:
                raise UserError(f"job {job_id} is {job.state}; only dead, retrying or "
                                "policy-denied jobs can be retried")
            # The old result (a denial) goes: it is not what this run will end with.
            changed = conn.execute(
                "UPDATE jobs SET state = ?, attempts = 0, next_run_at = ?, updated_at = ?, "
                "lease_owner = NULL, lease_expires_at = NULL, result = '{}' "
                "WHERE id = ? AND state = ?",
                (check_transition(job_id, job.state, QUEUED), now, now, job_id,
                 job.state)).rowcount
            if changed != 1:  # another process changed it between our read and our write
                raise UserError(f"job {job_id} changed while it was being retried",
                                hint="look at it with `promoter jobs show` and try again")
            conn.notify(WORK_CHANNEL)
            refreshed = queue_ops.fetch_job(conn, job_id)
            assert refreshed is not None
            return refreshed

        job = self._write(requeue)
        self.notify_work()
        return job

    def counts_by_state(self) -> dict[str, int]:
        rows = self._read(lambda conn: conn.execute(
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall())
        counts: dict[str, int] = {str(state): 0 for state in STATES}
        counts.update({row["state"]: row["n"] for row in rows})
        return counts

    def ping(self) -> None:
        """Raise TransientError unless the database answers a query."""
        # Not COUNT(*): a readiness probe must not scan the whole table.
        self._read(lambda conn: conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchone())

    # -- internals ------------------------------------------------------------------------

    def _finish(self, job_id: int, worker_id: str, state: JobState, *, reason: str | None,
                result: dict[str, Any] | None = None, delay: float = 0.0,
                not_before: float | None = None) -> None:
        def update(conn: Connection) -> None:
            now = self._now(conn)
            due = now + delay if not_before is None else max(now + delay, not_before)
            self._check_holder(conn, job_id, worker_id)
            conn.notify(WORK_CHANNEL)  # a job of the same (model, env) may be claimable now
            check_transition(job_id, RUNNING, state)
            conn.execute(
                "UPDATE jobs SET state = ?, reason = ?, result = COALESCE(?, result), "
                "next_run_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = ?",
                (state, None if reason is None else storable(reason),
                 None if result is None else to_json(result), due, now, job_id))

        self._write(update)
        self.notify_work()  # a job of the same (model, env) may be claimable now

    @staticmethod
    def _check_holder(conn: Connection, job_id: int, worker_id: str) -> None:
        """LeaseLost unless ``worker_id`` holds the job. The check is a no-op update, so on
        PostgreSQL the job's row stays locked until the caller's write commits: a claimer of
        the job after its lease expired passes it over until then, and then sees the outcome."""
        if conn.execute("UPDATE jobs SET lease_owner = lease_owner "
                        "WHERE id = ? AND state = ? AND lease_owner = ?",
                        (job_id, RUNNING, worker_id)).rowcount == 1:
            return
        row = conn.execute("SELECT state, lease_owner FROM jobs WHERE id = ?",
                           (job_id,)).fetchone()
        if row is None:
            raise UserError(f"no job with id {job_id}")
        if row["state"] != RUNNING or row["lease_owner"] != worker_id:
            raise LeaseLost(f"worker {worker_id} no longer holds job {job_id} "
                            f"(it is {row['state']}, held by {row['lease_owner'] or 'nobody'})")

    def _now(self, conn: Connection) -> float:
        """The time leases and due times are measured in (see __init__), read inside ``conn``'s
        transaction (see _write)."""
        return queue_ops.shared_now(conn, self.clock.now(), self._on_database_clock)

    def _write(self, body: Callable[[Connection], T]) -> T:
        """Run ``body`` in one write transaction. Bodies read the clock themselves, once the
        transaction holds the write lock: on SQLite, taking it may wait up to the 30 s busy
        timeout, and a time read before that wait would grant a lease (or a due time) already
        that much in the past: a lease handed out expired, taken by a second worker at once."""
        return self.db.write(body)

    def _read(self, body: Callable[[Connection], T]) -> T:
        return self.db.read(body)
