"""The queue's statements that must run inside a caller's write transaction.

Shared by JobQueue (one transaction per call) and the group-commit writer (many enqueues in
one transaction), so both follow exactly the same rules, on either state backend. SQLite runs
one writer at a time; on PostgreSQL writers are concurrent, so each decision that reads rows
and then changes them either locks what it decides about (``conn.lock`` per (model, env) in
enqueue, ``FOR UPDATE SKIP LOCKED`` in claim) or changes them only if they are still as read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from promoter.core.jobs import (
    DONE,
    QUEUED,
    RUNNING,
    Job,
    JobAction,
    JobKey,
    JobState,
    check_transition,
    needs_new_job,
    settled_key,
)
from promoter.state.db import Connection

# NOTIFY channel of new or freed work (PostgreSQL; idle workers of every replica LISTEN).
WORK_CHANNEL = "promoter_work"


@dataclass(frozen=True)
class EnqueueResult:
    job: Job
    created: bool  # False: an existing job already covers this key
    duplicate_delivery: bool  # True: this (source, delivery id) was seen before


def to_json(value: dict[str, Any] | None) -> str:
    return json.dumps(value or {}, sort_keys=True, separators=(",", ":"), default=str)


def row_to_job(row: Any) -> Job:
    return Job(
        id=row["id"],
        key=JobKey(row["model"], row["version"], row["env"], row["action"]),
        state=JobState(row["state"]), attempts=row["attempts"],
        payload=json.loads(row["payload"]), result=json.loads(row["result"]),
        reason=row["reason"], created_at=row["created_at"], updated_at=row["updated_at"],
        next_run_at=row["next_run_at"], lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
    )


def stands_for(row: Any) -> JobKey:
    """The key a job's row stands for (settled_key); only a done promotion's result is
    decoded (to learn the version it resolved)."""
    key = JobKey(row["model"], row["version"], row["env"], row["action"])
    result = json.loads(row["result"]) if row["state"] == DONE \
        and key.action == JobAction.PROMOTE else None
    return settled_key(key, row["state"], result)


def fetch_job(conn: Connection, job_id: int) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row_to_job(row) if row else None


def enqueue(conn: Connection, now: float, key: JobKey, payload: dict[str, Any] | None,
            source: str, delivery_id: str | None, settle_seconds: float = 0.0, *,
            fresh: bool = False) -> EnqueueResult:
    """Record the delivery, then create a job unless one already covers the key (a finished
    one never does for a ``fresh`` request: core.jobs.needs_new_job).

    ``settle_seconds`` debounces bursts: a job that has to wait for a running one of its
    (model, env) starts only once no event for it arrived for that long, and each event a
    queued job covers pushes its start back, so the burst's last event decides what it deploys
    and the deployment converges in one run, not one run per move."""
    duplicate = False
    # Two deliveries of one event at two replicas must not both decide "no job covers it".
    conn.lock(work_lock(key.model, key.env))
    if delivery_id is not None:
        seen = conn.execute("SELECT job_id FROM deliveries WHERE source = ? AND delivery_id = ?",
                            (source, delivery_id)).fetchone()
        if seen is not None:
            duplicate = True
            first_job = fetch_job(conn, seen["job_id"]) if seen["job_id"] is not None else None
            if first_job is not None:
                return EnqueueResult(first_job, created=False, duplicate_delivery=True)
            # Seen through record_delivery() without a job: fall through so the caller gets
            # the job that covers this key (created only if none does).
    # Only the newest job's key, state and (once done) result matter.
    latest = conn.execute(
        "SELECT id, model, version, env, action, state, result FROM jobs "
        "WHERE model = ? AND env = ? "
        "ORDER BY id DESC LIMIT 1", (key.model, key.env)).fetchone()
    covering = None
    if latest is not None and not needs_new_job(key, stands_for(latest), latest["state"],
                                                    fresh=fresh):
        covering = fetch_job(conn, latest["id"])
    if covering is not None and covering.state == QUEUED and not duplicate:
        # A worker may claim it meanwhile (claims take no key lock); then it covers nothing.
        covering = _cover(conn, covering, key, now + settle_seconds,
                          payload if fresh else None)
    if covering is not None:
        job, created = covering, False
    else:
        # A first job of its (model, env) has nothing to wait for: skip the query.
        running = latest is not None and conn.execute(
            "SELECT 1 FROM jobs WHERE model = ? AND env = ? AND state = 'running' LIMIT 1",
            (key.model, key.env)).fetchone()
        start = now + settle_seconds if running else now  # a successor waits for the burst
        job_id = int(conn.execute(
            "INSERT INTO jobs (model, version, env, action, state, payload, created_at, "
            "updated_at, next_run_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (key.model, key.version, key.env, key.action, QUEUED, to_json(payload),
             now, now, start)).fetchone()[0])
        conn.notify(WORK_CHANNEL)
        job = Job(job_id, key, QUEUED, 0, dict(payload or {}), {}, None, now, now, start,
                  None, None)
        created = True
    if delivery_id is not None:
        conn.execute(
            "INSERT INTO deliveries (source, delivery_id, job_id, received_at) VALUES (?,?,?,?) "
            "ON CONFLICT (source, delivery_id) DO UPDATE SET job_id = excluded.job_id",
            (source, delivery_id, job.id, now))
    return EnqueueResult(job, created=created, duplicate_delivery=duplicate)


def _cover(conn: Connection, job: Job, key: JobKey, start: float,
           payload: dict[str, Any] | None = None) -> Job | None:
    """A queued job takes on a later event: it now names the newest version asked for (it
    deploys whatever the alias says when it runs) and starts no earlier than ``start``; a
    fresh request's ``payload`` (`promoter rollback`: its actor, reason, target) goes over its
    own, since it now runs for that request. None if it is no longer queued (a worker
    claimed it since it was read)."""
    merged = job.payload if payload is None else {**job.payload, **payload}
    changed = conn.execute(
        "UPDATE jobs SET version = ?, next_run_at = ?, payload = ? WHERE id = ? AND state = ?",
        (key.version, max(job.next_run_at, start), to_json(merged), job.id,
         QUEUED)).rowcount
    return fetch_job(conn, job.id) if changed == 1 else None


def work_lock(model: str, env: str) -> str:
    """The lock name serialising enqueues of one (model, env) (see Connection.lock).

    ``model`` is a registered-model name, which MLflow lets hold almost anything ("/", spaces,
    quotes); ``env`` is an environment name, validated as an RFC 1035 label (settings), so it
    holds no "/" and the name splits at its last "/" one way only: distinct pairs never share
    a lock. The name is never a path or an SQL identifier: PostgreSQL gets it as a bound
    parameter and hashes it (hashtextextended), SQLite takes no named lock at all."""
    return f"jobs:{model}/{env}"


def database_now(conn: Connection) -> float:
    """The state database's own clock (PostgreSQL), in seconds since the epoch: the one clock
    every replica sharing the database agrees on."""
    return float(conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])


def shared_now(conn: Connection, local_now: float, on_database_clock: bool) -> float:
    """The time that leases, due times and takeover claims are measured in, read inside
    ``conn``'s transaction. They are compared across replicas: on PostgreSQL by the database's
    clock, the one they all share, so a replica whose clock runs ahead cannot take over live
    work of another, nor run a job before the backoff another replica gave it. SQLite serves
    one host, whose system clock is that one clock. A clock passed in to a store (tests, a
    simulation) governs instead (``on_database_clock`` False)."""
    if on_database_clock and conn.dialect == "postgresql":
        return database_now(conn)
    return local_now


def seconds_until_due(conn: Connection, now: float) -> float | None:
    """How long until something may become claimable without anyone saying so: a queued or
    retrying job comes due, or a running job's lease runs out (its worker, perhaps on another
    replica, died). None: nothing is pending. Jobs already due but held back by a running one
    of their (model, env) do not count: that one's finish wakes the workers. ``now`` is the
    queue's shared time (shared_now), the one leases and due times were written in."""
    row = conn.execute(
        "SELECT MIN(CASE WHEN state = 'running' THEN lease_expires_at ELSE next_run_at END) - ? "
        "FROM jobs WHERE state IN ('queued', 'running', 'retrying') "
        "AND CASE WHEN state = 'running' THEN lease_expires_at ELSE next_run_at END > ?",
        (now, now)).fetchone()
    return None if row[0] is None else max(0.0, float(row[0]))


# A job is due when it is queued or retrying and its time has come, or running under a lease
# that expired (its worker died, or is frozen and about to learn it lost the job). A due job
# that is waiting is claimable only if no older unfinished job exists for its (model, env) —
# so jobs for one deployment run one at a time, in arrival order — and no job of it is
# running, whether or not its lease has expired: the worker of an expired lease may still be
# at work, and only the takeover of that job itself cuts it off (LeaseLost). An expired
# running job is claimable unless another job of its (model, env) holds a live lease, or an
# older one is running too; older waiting jobs do not hold it back (`jobs retry` can make an
# older job unfinished again while a newer one runs). So two claimers never pick two jobs of
# one deployment (on PostgreSQL, given the work lock: see _claimable_under_work_lock).
_CLAIM_SQL = """
SELECT j.* FROM jobs AS j
WHERE j.state IN ('queued', 'running', 'retrying')  -- lets SQLite use jobs_unfinished
  AND ((j.state IN ('queued', 'retrying') AND j.next_run_at <= ?)
       OR (j.state = 'running' AND j.lease_expires_at <= ?))
  AND NOT EXISTS (
      SELECT 1 FROM jobs AS o
      WHERE o.model = j.model AND o.env = j.env AND o.id <> j.id
        AND ((j.state <> 'running' AND o.id < j.id AND o.state NOT IN ('done', 'dead'))
             OR (o.state = 'running'
                 AND (j.state <> 'running' OR o.lease_expires_at > ? OR o.id < j.id))))
"""
_ONLY_JOB = "  AND j.id = ?  -- `promoter promote` runs only its own job\n"
_OLDEST = "ORDER BY j.id LIMIT 1"
# PostgreSQL: the first look locks nothing; each candidate is then re-checked under its
# (model, env) work lock, and its row locked, passing over rows another claimer has locked.
_CANDIDATES = "ORDER BY j.id LIMIT 20"
_RECHECK = "  AND j.id = ? FOR UPDATE OF j SKIP LOCKED"


def claim(conn: Connection, now: float, worker_id: str, lease_seconds: float, *,
          job_id: int | None = None) -> Job | None:
    """Take the oldest claimable job (or job ``job_id`` only, if it is claimable).

    ``now`` decides when queued and retrying jobs come due, when leases run out and the new
    lease's expiry. Replicas sharing a PostgreSQL database pass its clock (shared_now), so a
    replica whose clock runs ahead can neither take a live lease nor run a job early."""
    sql, args = _CLAIM_SQL, [now, now, now]
    if job_id is not None:
        sql, args = sql + _ONLY_JOB, [*args, job_id]
    if conn.dialect == "postgresql":
        row = _claimable_under_work_lock(conn, sql, args)
    else:  # one writer at a time: what the query sees stays true until the update
        row = conn.execute(sql + _OLDEST, args).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE jobs SET state = ?, lease_owner = ?, lease_expires_at = ?, "
        "attempts = attempts + 1, updated_at = ? WHERE id = ?",
        (check_transition(row["id"], row["state"], RUNNING), worker_id,
         now + lease_seconds, now, row["id"]))
    return fetch_job(conn, row["id"])


def _claimable_under_work_lock(conn: Connection, sql: str, args: list[Any]) -> Any:
    """PostgreSQL, READ COMMITTED: "no older unfinished job of its (model, env)" is about
    other rows, which a concurrent `jobs retry` (or claim) may be changing; row locks alone
    let both sides miss each other's uncommitted change, and two jobs of one deployment run.
    So each candidate is re-checked after taking its (model, env) work lock, which retry and
    enqueue take too. The lock is tried, not waited for (a busy deployment is passed over,
    as a locked row is), and it comes before the row lock as in enqueue: no deadlock."""
    for candidate in conn.execute(sql + _CANDIDATES, args).fetchall():
        if not conn.try_lock(work_lock(candidate["model"], candidate["env"])):
            continue
        row = conn.execute(sql + _RECHECK, [*args, candidate["id"]]).fetchone()
        if row is not None:
            return row
    return None
