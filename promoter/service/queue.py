"""The durable job queue: SQLite in WAL mode at ``<state_dir>/promoter.db``.

Safe across threads (each thread gets its own connection) and processes (every write is one
``BEGIN IMMEDIATE`` transaction, so two workers can never claim the same job). A worker holds a
job under a lease; if it dies — even by SIGKILL — the lease expires and another worker
re-claims the job. The decisions (coalescing, legal state changes) come from promoter.core.jobs.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
)
from promoter.errors import PromoterError, TransientError, UserError
from promoter.ports.clock import Clock, SystemClock
from promoter.service import queue_ops
from promoter.service.queue_ops import EnqueueResult, row_to_job, to_json
from promoter.service.queue_schema import (
    DB_FILENAME,
    DELIVERY_RETENTION_SECONDS,
    SCHEMA_VERSION,
    connect,
    migrate,
)
from promoter.service.queue_writer import GroupCommitWriter

__all__ = ["EnqueueResult", "Job", "JobKey", "JobQueue", "LeaseLost"]

T = TypeVar("T")


class LeaseLost(PromoterError):
    """This worker no longer holds the job (its lease expired and someone else took it)."""

    kind = "lease_lost"


class JobQueue:
    def __init__(self, db_path: Path, clock: Clock | None = None) -> None:
        self.db_path = Path(db_path)
        self.clock: Clock = clock or SystemClock()
        self._local = threading.local()
        self._connections: set[sqlite3.Connection] = set()
        self._connections_lock = threading.Lock()
        self._writer = GroupCommitWriter(self.db_path, self.clock)
        # In-process wake-ups, so a worker starts a new job at once instead of at its next poll
        # (other processes' changes are still found by polling).
        self._work = threading.Condition()
        self._work_generation = 0
        with self._errors_translated():
            found = migrate(self._conn())
        if found > SCHEMA_VERSION:
            raise UserError(f"{self.db_path} was written by a newer promoter "
                            f"(schema {found}, this one knows {SCHEMA_VERSION})",
                            hint="upgrade promoter, or point PROMOTER_STATE_DIR elsewhere")

    @classmethod
    def open(cls, state_dir: Path, clock: Clock | None = None) -> JobQueue:
        state_dir = Path(state_dir).expanduser()
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the state directory {state_dir}: {exc.strerror}",
                            hint="set PROMOTER_STATE_DIR to a writable directory") from None
        return cls(state_dir / DB_FILENAME, clock)

    def close(self) -> None:
        self._writer.close()
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for conn in list(connections):  # finalizers of dying threads may remove theirs
            conn.close()
        self._local = threading.local()

    # -- intake ---------------------------------------------------------------------------

    def enqueue(self, key: JobKey, payload: dict[str, Any] | None = None, *, source: str = "",
                delivery_id: str | None = None) -> EnqueueResult:
        """Store a delivery durably; a new job only if no unfinished-or-done job covers it."""
        now = self.clock.now()
        result = self._write(lambda conn: queue_ops.enqueue(conn, now, key, payload, source,
                                                            delivery_id))
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

    def wait_for_work(self, seen_generation: int, timeout: float) -> bool:
        """Block until work_generation() moves past ``seen_generation`` or ``timeout`` passes."""
        with self._work:
            return self._work.wait_for(lambda: self._work_generation != seen_generation,
                                       timeout)

    def record_delivery(self, source: str, delivery_id: str) -> bool:
        """Remember a delivery that made no job (e.g. an ignored event); True the first time."""
        now = self.clock.now()

        def insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO deliveries (source, delivery_id, job_id, received_at) "
                "VALUES (?, ?, NULL, ?) ON CONFLICT DO NOTHING", (source, delivery_id, now))
            return cursor.rowcount == 1

        return self._write(insert)

    def prune_deliveries(self, older_than_seconds: float = DELIVERY_RETENTION_SECONDS) -> int:
        """Forget delivery ids received longer ago than that; returns how many were dropped."""
        cutoff = self.clock.now() - older_than_seconds
        return self._write(lambda conn: conn.execute(
            "DELETE FROM deliveries WHERE received_at < ?", (cutoff,)).rowcount)

    # -- workers --------------------------------------------------------------------------

    def claim(self, worker_id: str, lease_seconds: float = 60.0) -> Job | None:
        now = self.clock.now()
        return self._write(lambda conn: queue_ops.claim(conn, now, worker_id, lease_seconds))

    def extend_lease(self, job_id: int, worker_id: str, lease_seconds: float) -> bool:
        now = self.clock.now()
        return self._write(lambda conn: conn.execute(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ? "
            "WHERE id = ? AND state = ? AND lease_owner = ?",
            (now + lease_seconds, now, job_id, RUNNING, worker_id)).rowcount == 1)

    def record_step(self, job_id: int, step: str, result: dict[str, Any], *,
                    worker_id: str | None = None) -> None:
        """Store one step's result (replacing an earlier one). With ``worker_id``, only while
        that worker still holds the job's lease (LeaseLost otherwise)."""
        now = self.clock.now()

        def upsert(conn: sqlite3.Connection) -> None:
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

    def retry_later(self, job_id: int, worker_id: str, reason: str, delay: float) -> None:
        self._finish(job_id, worker_id, RETRYING, reason=reason, delay=max(0.0, delay))

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

    def retry(self, job_id: int) -> Job:
        """Queue a dead, retrying or policy-denied job to run now, with a fresh attempt count."""
        now = self.clock.now()

        def requeue(conn: sqlite3.Connection) -> Job:
            job = queue_ops.fetch_job(conn, job_id)
            if job is None:
                raise UserError(f"no job with id {job_id}",
                                hint="list jobs with `promoter jobs list`")
            denied = job.state == DONE and job.result.get("outcome") == "denied"
            if job.state not in (DEAD, RETRYING) and not denied:
                raise UserError(f"job {job_id} is {job.state}; only dead, retrying or "
                                "policy-denied jobs can be retried")
            conn.execute("UPDATE jobs SET state = ?, attempts = 0, next_run_at = ?, "
                         "updated_at = ?, lease_owner = NULL, lease_expires_at = NULL "
                         "WHERE id = ?", (QUEUED, now, now, job_id))
            refreshed = queue_ops.fetch_job(conn, job_id)
            assert refreshed is not None
            return refreshed

        job = self._write(requeue)
        self.notify_work()
        return job

    def counts_by_state(self) -> dict[str, int]:
        rows = self._read(lambda conn: conn.execute(
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall())
        counts = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: row["n"] for row in rows})
        return counts

    def ping(self) -> None:
        """Raise TransientError unless the database answers a query."""
        self._read(lambda conn: conn.execute("SELECT COUNT(*) FROM jobs LIMIT 1").fetchone())

    # -- internals ------------------------------------------------------------------------

    def _finish(self, job_id: int, worker_id: str, state: str, *, reason: str | None,
                result: dict[str, Any] | None = None, delay: float = 0.0) -> None:
        now = self.clock.now()

        def update(conn: sqlite3.Connection) -> None:
            self._check_holder(conn, job_id, worker_id)
            conn.execute(
                "UPDATE jobs SET state = ?, reason = ?, result = COALESCE(?, result), "
                "next_run_at = ?, updated_at = ?, lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = ?",
                (state, reason, None if result is None else to_json(result), now + delay, now,
                 job_id))

        self._write(update)
        self.notify_work()  # a job of the same (model, env) may be claimable now

    @staticmethod
    def _check_holder(conn: sqlite3.Connection, job_id: int, worker_id: str) -> None:
        row = conn.execute("SELECT state, lease_owner FROM jobs WHERE id = ?",
                           (job_id,)).fetchone()
        if row is None:
            raise UserError(f"no job with id {job_id}")
        if row["state"] != RUNNING or row["lease_owner"] != worker_id:
            raise LeaseLost(f"worker {worker_id} no longer holds job {job_id} "
                            f"(it is {row['state']}, held by {row['lease_owner'] or 'nobody'})")

    def _conn(self) -> sqlite3.Connection:
        holder: _ConnectionHolder | None = getattr(self._local, "holder", None)
        if holder is None:
            conn = connect(self.db_path)
            holder = _ConnectionHolder(conn)
            self._local.holder = holder
            with self._connections_lock:
                self._connections.add(conn)
            # Threads come and go (a heartbeat per job): close a connection with its thread.
            weakref.finalize(holder, _forget_connection, conn, self._connections,
                             self._connections_lock)
        return holder.conn

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one write transaction taken up front (BEGIN IMMEDIATE)."""
        with self._errors_translated():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = body(conn)
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return value

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        with self._errors_translated():
            return body(self._conn())

    @contextmanager
    def _errors_translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise TransientError(f"the job queue at {self.db_path} is unusable: {exc}",
                                 hint="check the state directory's disk space and permissions; "
                                      "another process may hold a long write lock") from exc


class _ConnectionHolder:
    """One thread's connection; collected (and the connection closed) when the thread ends."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


def _forget_connection(conn: sqlite3.Connection, connections: set[sqlite3.Connection],
                       lock: threading.Lock) -> None:
    with lock:
        connections.discard(conn)
    conn.close()
