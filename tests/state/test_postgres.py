"""What only the PostgreSQL state backend does: migrations under an advisory lock, claims that
pass over locked rows, wake-ups across processes, one reconcile leader, no password in errors.
Real PostgreSQL (tests.fixtures.postgres); behaviour shared with SQLite is in tests/queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from promoter.adapters.postgres_state import PostgresStateDB, StateUrl, redact
from promoter.adapters.postgres_state.schema import SCHEMA_VERSION, VERSIONS_TABLE
from promoter.core.cluster_status import ClusterStatus, summarise
from promoter.errors import ConfigError, TransientError
from promoter.ports.registry import ModelVersionInfo, RegisteredModelInfo
from promoter.service.audit import AuditTrail
from promoter.service.cluster_status_store import TELLING_TAKEOVER_SECONDS, StatusStore
from promoter.service.hook_deliveries import HookClaim, HookDeliveries
from promoter.service.queue import JobKey, JobQueue
from promoter.service.reconcile import ReconcileState, reconcile_once, run_periodically
from promoter.settings import load_settings
from promoter.state.db import Connection
from promoter.state.deliveries import PROCESSING_TAKEOVER_SECONDS
from tests.core.test_pipeline import MemoryRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
M1 = JobKey("model-a", "1", "staging", "promote")
M2 = JobKey("model-b", "1", "staging", "promote")


def connect(url: str, tmp_path: Path) -> PostgresStateDB:
    return PostgresStateDB.connect(StateUrl(url), state_dir=tmp_path)


def child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
PostgresStateDB.connect(StateUrl(sys.argv[1])).close()
"""


def test_processes_opening_a_fresh_database_at_once_migrate_it_exactly_once(
        postgres_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    processes = [child(OPEN_AT_ONCE, postgres_url, str(go)) for _ in range(5)]
    time.sleep(1.0)  # let them all import and line up at the start
    go.touch()
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr  # a second CREATE TABLE jobs would have failed
    db = connect(postgres_url, tmp_path)
    versions = db.read(lambda conn: [row[0] for row in conn.execute(
        f"SELECT version FROM {VERSIONS_TABLE} ORDER BY version").fetchall()])
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    db.close()


def test_a_database_from_a_newer_promoter_is_refused(postgres_url: str, tmp_path: Path) -> None:
    db = connect(postgres_url, tmp_path)
    db.write(lambda conn: conn.execute(f"INSERT INTO {VERSIONS_TABLE} (version) VALUES (?)",
                                       (SCHEMA_VERSION + 1,)))
    db.close()
    with pytest.raises(ConfigError, match="newer promoter"):
        connect(postgres_url, tmp_path)


def test_cluster_summaries_stored_before_schema_2_count_as_told(postgres_url: str,
                                                               tmp_path: Path) -> None:
    """An upgrade tells no environment again: what older promoters stored was told."""
    import psycopg

    from promoter.adapters.postgres_state.schema import MIGRATIONS

    with psycopg.connect(postgres_url) as old:   # the database as promoter's schema 1 left it
        old.execute(f"CREATE TABLE {VERSIONS_TABLE} (version INTEGER PRIMARY KEY, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        old.execute(MIGRATIONS[0].encode())
        old.execute(f"INSERT INTO {VERSIONS_TABLE} (version) VALUES (1)")
        old.execute("INSERT INTO cluster_summaries VALUES ('fraud', 'production', 'd1', 1)")
    db = connect(postgres_url, tmp_path)
    assert db.read(lambda conn: [tuple(row) for row in conn.execute(
        "SELECT digest, deployed, telling_digest, telling_since "
        "FROM cluster_summaries").fetchall()]) == [("d1", 1, None, None)]
    db.close()


def test_schema_4_gives_up_claims_of_models_decommissioned_everywhere(postgres_url: str,
                                                                      tmp_path: Path) -> None:
    """As SQLite's schema 7: claims schema 3 kept for models decommissioned everywhere go;
    the others stay, with no claimed_at (old)."""
    import psycopg

    from promoter.adapters.postgres_state.schema import MIGRATIONS

    with psycopg.connect(postgres_url) as old:   # the database as promoter's schema 3 left it
        old.execute(f"CREATE TABLE {VERSIONS_TABLE} (version INTEGER PRIMARY KEY, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for version in range(3):
            old.execute(MIGRATIONS[version].encode())
            old.execute(f"INSERT INTO {VERSIONS_TABLE} (version) VALUES (%s)", (version + 1,))
        for row in (("gone", "staging", "gone", "1", "decommissioned"),
                    ("live", "staging", "live", "1", "decommissioned"),
                    ("live", "production", "live", "1", "merged")):
            old.execute("INSERT INTO deployments (model, env, name, version, status) "
                        "VALUES (%s, %s, %s, %s, %s)", row)
        for name in ("gone", "live", "first"):
            old.execute("INSERT INTO deployment_names VALUES (%s, %s)", (name, name))
    db = connect(postgres_url, tmp_path)
    assert sorted(db.read(lambda conn: [tuple(row) for row in conn.execute(
        "SELECT name, model, claimed_env, claimed_at FROM deployment_names").fetchall()])) == [
        ("first", "first", None, None), ("live", "live", None, None)]
    db.close()


def test_a_second_claimer_passes_over_the_job_a_first_one_is_claiming(
        postgres_url: str, tmp_path: Path) -> None:
    first, second = JobQueue(connect(postgres_url, tmp_path)), \
        JobQueue(connect(postgres_url, tmp_path))  # two pools: as two replicas
    a, b = first.enqueue(M1).job, first.enqueue(M2).job
    holding, release = threading.Event(), threading.Event()
    claimed_first: list[int] = []

    def claim_and_hold(conn: Connection) -> None:
        from promoter.service import queue_ops

        job = queue_ops.claim(conn, time.time(), "slow", 60)
        assert job is not None
        claimed_first.append(job.id)
        holding.set()
        release.wait(30)  # the transaction (and its row lock) stays open meanwhile

    thread = threading.Thread(target=lambda: first.db.write(claim_and_hold))
    thread.start()
    assert holding.wait(30)
    started = time.monotonic()
    other = second.claim("fast")  # neither waits for the lock nor takes the same job
    waited = time.monotonic() - started
    release.set()
    thread.join(30)
    assert claimed_first == [a.id]
    assert other is not None and other.id == b.id
    assert waited < 25  # it did not sit out the first claimer's transaction
    assert second.claim("third") is None  # both are held now
    assert {first.get(a.id).lease_owner, first.get(b.id).lease_owner} == {"slow", "fast"}
    first.close()
    second.close()


def test_a_retried_older_job_and_a_claimed_newer_one_never_run_at_once(
        postgres_url: str, tmp_path: Path) -> None:
    """`jobs retry` of an older dead job while a worker claims the newer queued job of the same
    (model, env): under READ COMMITTED each sees the other's change only once committed, so
    without the (model, env) work lock a third claimer took the retried job too."""
    queue = JobQueue(connect(postgres_url, tmp_path))
    other = JobQueue(connect(postgres_url, tmp_path))  # another replica's worker
    older = queue.enqueue(JobKey("m", "1", "prod", "promote")).job
    assert queue.claim("w0") is not None
    queue.park(older.id, "w0", "broken")
    newer = queue.enqueue(JobKey("m", "2", "prod", "promote")).job
    holding, release = threading.Event(), threading.Event()

    def claim_and_hold(conn: Connection) -> None:
        from promoter.service import queue_ops

        job = queue_ops.claim(conn, time.time(), "x", 60)
        assert job is not None and job.id == newer.id
        holding.set()
        release.wait(30)  # the claim is not committed yet

    claimer = threading.Thread(target=lambda: queue.db.write(claim_and_hold))
    claimer.start()
    assert holding.wait(30)
    retrier = threading.Thread(target=lambda: queue.retry(older.id))  # the operator
    retrier.start()
    retrier.join(1.0)  # with the work lock it waits for the claim to commit
    taken = other.claim("y")
    release.set()
    claimer.join(30)
    retrier.join(30)
    assert taken is None
    running = queue.list("running")
    assert [job.id for job in running] == [newer.id]
    assert queue.get(older.id).state == "queued"  # it runs after the newer one, not beside it
    queue.close()
    other.close()


class _AheadClock:
    """The system clock of a replica whose time runs two minutes ahead."""

    def now(self) -> float:
        return time.time() + 120


def test_a_replica_whose_clock_runs_ahead_cannot_take_a_live_lease(
        postgres_url: str, tmp_path: Path) -> None:
    """Replicas compare leases on the database's clock, not their own: a replica two minutes
    ahead must not see a one-minute lease of another replica as expired."""
    holder = JobQueue(connect(postgres_url, tmp_path))
    ahead = JobQueue(connect(postgres_url, tmp_path))
    ahead.clock = _AheadClock()
    job = holder.enqueue(M1).job
    assert holder.claim("holder", lease_seconds=60) is not None
    assert ahead.claim("ahead", lease_seconds=60) is None
    assert holder.get(job.id).lease_owner == "holder"
    due = ahead.seconds_until_due()  # it waits for the lease, rather than polling at once
    assert due is not None and 50 < due <= 60
    assert holder.extend_lease(job.id, "holder", 60)
    assert ahead.claim("ahead", lease_seconds=60) is None
    holder.close()
    ahead.close()


class _SkewedClock:
    """The system clock of a replica whose time is ``offset`` seconds off."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def replica(postgres_url: str, tmp_path: Path, skew: float = 0.0) -> JobQueue:
    """A replica's queue on the database's clock, its own clock ``skew`` seconds off."""
    queue = JobQueue(connect(postgres_url, tmp_path))
    queue.clock = _SkewedClock(skew)  # after construction: leases stay on the database's clock
    return queue


def test_a_job_queued_or_retried_on_a_replica_whose_clock_runs_ahead_is_due_everywhere_now(
        postgres_url: str, tmp_path: Path) -> None:
    """Due times are written and compared on the database's clock: a job queued (or `jobs
    retry`-ed) through a replica ten minutes ahead is due for the others at once, not in ten
    minutes."""
    ahead, on_time = replica(postgres_url, tmp_path, 600), replica(postgres_url, tmp_path)
    job = ahead.enqueue(M1).job
    assert on_time.seconds_until_due() is None  # due already: nothing to wait for
    claimed = on_time.claim("on-time", lease_seconds=60)
    assert claimed is not None and claimed.id == job.id
    on_time.park(job.id, "on-time", "GitLab refused the token")
    ahead.retry(job.id)
    again = on_time.claim("on-time", lease_seconds=60)
    assert again is not None and again.id == job.id
    ahead.close()
    on_time.close()


def test_a_backoff_one_replica_sets_holds_on_a_replica_whose_clock_runs_ahead(
        postgres_url: str, tmp_path: Path) -> None:
    """A retry a replica put off by 120 s (a 429's Retry-After) is not run at once by a
    replica whose clock runs ten minutes ahead; that one waits out the rest of the backoff."""
    on_time, ahead = replica(postgres_url, tmp_path), replica(postgres_url, tmp_path, 600)
    job = on_time.enqueue(M1).job
    assert on_time.claim("on-time", lease_seconds=60) is not None
    on_time.retry_later(job.id, "on-time", "rate limited", delay=120)
    assert ahead.claim("ahead", lease_seconds=60) is None
    due = ahead.seconds_until_due()
    assert due is not None and 100 < due <= 120
    assert on_time.get(job.id).state == "retrying"
    on_time.close()
    ahead.close()


# A replica on another host whose system clock is off by argv[2] seconds claims a hook
# delivery (argv[3] = "delivery") or the telling of an Argo CD status (argv[3] = "telling") and
# prints whether it may act. The skew is the whole process's time.time(), set before promoter is
# imported, as a skewed host would have it: whatever clock promoter reads of its own, it is this.
SKEWED_REPLICA = """
import sys, time
real_time = time.time
time.time = lambda: real_time() + float(sys.argv[2])
from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
from promoter.core.cluster_status import ClusterStatus, summarise
from promoter.service.cluster_status_store import StatusStore
from promoter.service.hook_deliveries import HookDeliveries
db = PostgresStateDB.connect(StateUrl(sys.argv[1]))
if sys.argv[3] == "delivery":
    print(HookDeliveries(db, "gitlab").claim("delivery-1").outcome.name)
else:
    row = ClusterStatus("fraud-detector", "production", "gpu-eu-1", "Synced", "Healthy",
                        "a" * 40, "2026-01-01T10:05:00Z", "fraud-detector-production")
    told = StatusStore(db).record("fraud-detector", "production", [row], complete=False,
                                  summary=summarise)[1]
    print("TELL" if told else "LEAVE")
db.close()
"""


def claim_on_skewed_replica(postgres_url: str, skew: float, what: str) -> str:
    process = child(SKEWED_REPLICA, postgres_url, str(skew), what)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out.strip()


TELLING_ROW = ClusterStatus("fraud-detector", "production", "gpu-eu-1", "Synced", "Healthy",
                            "a" * 40, "2026-01-01T10:05:00Z", "fraud-detector-production")


def claim_telling(store: StatusStore) -> bool:
    return store.record("fraud-detector", "production", [TELLING_ROW], complete=False,
                        summary=summarise)[1]


def age_on_database_clock(db: PostgresStateDB, table_and_column: str, seconds: float) -> None:
    """Make every claim in ``table_and_column`` ``seconds`` older, as if its holder claimed it
    that long ago by the database's clock and then died."""
    table, column = table_and_column.split(".")
    db.write(lambda conn: conn.execute(f"UPDATE {table} SET {column} = {column} - ?",
                                       (seconds,)))


def test_a_replica_whose_clock_runs_ahead_cannot_take_over_a_live_delivery(
        postgres_url: str, tmp_path: Path) -> None:
    """A hook delivery still being handled by one replica: its re-delivery to a replica whose
    clock runs past the takeover age is answered 'in progress', not handled a second time."""
    holder = connect(postgres_url, tmp_path)
    assert HookDeliveries(holder, "gitlab").claim("delivery-1").outcome is HookClaim.ACT
    ahead = claim_on_skewed_replica(postgres_url, PROCESSING_TAKEOVER_SECONDS + 60, "delivery")
    assert ahead == HookClaim.IN_PROGRESS.name
    holder.close()


def test_a_replica_whose_clock_runs_behind_takes_over_a_dead_delivery_when_due(
        postgres_url: str, tmp_path: Path) -> None:
    """A delivery whose handler died past the takeover age by the database's clock is taken
    over by its re-delivery, even to a replica whose own clock says it is not that old yet."""
    holder = connect(postgres_url, tmp_path)
    assert HookDeliveries(holder, "gitlab").claim("delivery-1").outcome is HookClaim.ACT
    age_on_database_clock(holder, "deliveries.received_at", PROCESSING_TAKEOVER_SECONDS + 1)
    behind = claim_on_skewed_replica(postgres_url, -3600, "delivery")
    assert behind == HookClaim.ACT.name
    holder.close()


def test_a_replica_whose_clock_runs_ahead_cannot_take_over_a_live_telling(
        postgres_url: str, tmp_path: Path) -> None:
    """One replica is telling an Argo CD status change; another, its clock past the takeover
    age, observing the same rows leaves the telling to it rather than telling it twice."""
    telling = StatusStore(connect(postgres_url, tmp_path))
    assert claim_telling(telling)
    ahead = claim_on_skewed_replica(postgres_url, TELLING_TAKEOVER_SECONDS + 60, "telling")
    assert ahead == "LEAVE"
    telling.db.close()


def test_a_replica_whose_clock_runs_behind_takes_over_a_dead_telling_when_due(
        postgres_url: str, tmp_path: Path) -> None:
    """A telling whose teller died past the takeover age by the database's clock is taken over,
    even by a replica whose own clock says it is not that old yet."""
    telling = StatusStore(connect(postgres_url, tmp_path))
    assert claim_telling(telling)
    age_on_database_clock(telling.db, "cluster_summaries.telling_since",
                          TELLING_TAKEOVER_SECONDS + 1)
    assert claim_on_skewed_replica(postgres_url, -3600, "telling") == "TELL"
    telling.db.close()


def test_an_enqueue_elsewhere_wakes_an_idle_worker_before_its_fallback_poll(
        postgres_url: str, tmp_path: Path) -> None:
    fallback_poll = 60.0
    worker_side = JobQueue(connect(postgres_url, tmp_path))
    other_replica = JobQueue(connect(postgres_url, tmp_path))
    # The first wait starts listening and wakes once LISTEN is in effect.
    assert worker_side.wait_for_work(worker_side.work_generation(), fallback_poll)
    seen = worker_side.work_generation()
    enqueuer = threading.Timer(0.5, lambda: other_replica.enqueue(M1))
    enqueuer.start()
    woke = worker_side.wait_for_work(seen, fallback_poll)
    enqueuer.join()
    assert woke  # by the notification: the wait did not run out
    assert worker_side.claim("w") is not None
    worker_side.close()
    other_replica.close()


LEADER = """
import sys, time
from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
db = PostgresStateDB.connect(StateUrl(sys.argv[1]))
lead = db.leadership("reconcile")
assert lead.held()
print("leading", flush=True)
time.sleep(120)
"""


def test_the_lead_moves_when_the_leader_process_is_killed(postgres_url: str,
                                                          tmp_path: Path) -> None:
    leader = child(LEADER, postgres_url)
    assert leader.stdout is not None
    assert leader.stdout.readline().strip() == "leading", leader.stderr
    db = connect(postgres_url, tmp_path)
    follower = db.leadership("reconcile")
    assert not follower.held()
    assert db.leadership("another-loop").held()  # leads are per name
    leader.send_signal(signal.SIGKILL)
    leader.communicate(timeout=30)
    deadline = time.monotonic() + 30  # the lock goes with the killed session, at once
    while not follower.held():
        assert time.monotonic() < deadline, "the follower never took the lead"
        time.sleep(0.2)
    assert follower.held()  # and it keeps it
    follower.release()
    db.close()


def test_a_leader_whose_session_is_terminated_stops_leading(postgres_url: str,
                                                            tmp_path: Path) -> None:
    db = connect(postgres_url, tmp_path)
    leader, follower = db.leadership("reconcile"), db.leadership("reconcile")
    assert leader.held() and not follower.held()
    db.write(lambda conn: conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
        "AND granted AND pid <> pg_backend_pid()").fetchall())
    assert not leader.held()  # it notices its session is gone
    assert follower.held()
    db.close()


def test_replicas_appending_at_once_form_one_verifiable_audit_chain(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promoter.service import audit_table

    monkeypatch.setattr(audit_table, "PAGE", 7)  # read back in several pages
    trails = [AuditTrail(tmp_path, connect(postgres_url, tmp_path)) for _ in range(3)]

    def append(trail: AuditTrail, index: int) -> None:
        for n in range(20):
            trail.record("job.done", actor=f"replica-{index}", n=n)

    threads = [threading.Thread(target=append, args=(t, i)) for i, t in enumerate(trails)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    reader = trails[0]
    assert reader.verify() is None
    assert len(list(reader.entries())) == 60
    head = reader.recorded_head()
    assert head is not None and head.seq == 60
    assert not (tmp_path / "audit.jsonl").exists()  # the chain lives in the database


def test_errors_name_the_server_without_its_password(postgres_server: object,
                                                     tmp_path: Path) -> None:
    from tests.fixtures.mlflow_server import free_port

    url = StateUrl(f"postgresql://promoter@127.0.0.1:{free_port()}/state",
                   password="s3cret-Pa55", options=(("sslmode", "disable"),))
    with pytest.raises(TransientError) as caught:
        PostgresStateDB.connect(url, state_dir=tmp_path)
    text = str(caught.value) + (caught.value.hint or "")
    assert "127.0.0.1" in text and "s3cret-Pa55" not in text


def test_redact_hides_passwords_in_urls() -> None:
    assert redact("postgresql://u:pw@db:5432/s?sslmode=require") == \
        "postgresql://u:***@db:5432/s?sslmode=require"
    assert "pw" not in redact("postgresql://u@db/s?password=pw&sslmode=require")
    # libpq decodes parameter names: pass%77ord= sets the password too.
    encoded = "postgresql://u@db/s?sslmode=require&pass%77ord=hunter2xyz"
    assert conninfo_to_dict(encoded)["password"] == "hunter2xyz"
    assert "hunter2xyz" not in redact(encoded)
    assert "hunter2xyz" not in StateUrl(encoded).scrub(f"could not connect to {encoded}")


def test_a_state_url_with_a_password_is_refused(tmp_path: Path) -> None:
    from promoter.settings import load_settings

    for url in ("postgresql://u:pw@db/state", "postgresql://u@db/state?password=pw",
                "postgresql://u@db/state?pass%77ord=pw", "postgresql://u@db/state?%50ASSWORD=pw"):
        with pytest.raises(ConfigError, match="PROMOTER_STATE_PASSWORD"):
            load_settings(None, {"PROMOTER_STATE_URL": url, "PROMOTER_STATE_DIR": str(tmp_path)})


def test_tls_options_and_the_password_reach_libpq_but_no_message(tmp_path: Path) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from promoter.settings import load_settings

    config = tmp_path / "promoter.yaml"
    config.write_text("state:\n  url: postgresql://promoter@db.internal:5432/state\n"
                      "  sslmode: verify-full\n  sslrootcert: /etc/promoter/ca.pem\n")
    settings = load_settings(config, {"PROMOTER_STATE_PASSWORD": "pw-from-env",
                                      "PROMOTER_STATE_DIR": str(tmp_path)})
    url = StateUrl(str(settings.state.url), "pw-from-env", settings.state.tls_options())
    libpq = conninfo_to_dict(url.conninfo())
    assert (libpq["sslmode"], libpq["sslrootcert"], libpq["password"]) == (
        "verify-full", "/etc/promoter/ca.pem", "pw-from-env")
    assert "pw-from-env" not in url.describe()
    assert url.scrub("failed for password=pw-from-env") == "failed for password=***"


def test_two_replicas_group_committing_the_same_deliveries_make_one_job_per_event(
        postgres_url: str, tmp_path: Path) -> None:
    import asyncio

    replicas = [JobQueue(connect(postgres_url, tmp_path)) for _ in range(2)]
    # 60 events over 20 deployments, in a different order at each replica; every delivery
    # reaches both (a sender retrying at another replica), all at once.
    events = [(JobKey(f"model-{n % 20}", "1", "staging", "promote"), f"d-{n}")
              for n in range(60)]
    outcomes: list[list[object]] = [[], []]

    def deliver(index: int) -> None:
        ordered = events if index == 0 else list(reversed(events))

        async def send_all() -> list[object]:
            return list(await asyncio.gather(*[
                replicas[index].enqueue_async(key, source="mlflow", delivery_id=delivery)
                for key, delivery in ordered]))

        outcomes[index] = asyncio.run(send_all())

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(len(results) == 60 for results in outcomes)  # nobody failed (no deadlock)
    jobs = replicas[0].list(limit=1000)
    assert sorted(job.key.model for job in jobs) == sorted(f"model-{n}" for n in range(20))
    pointed = replicas[0].db.read(lambda conn: conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT delivery_id) FROM deliveries").fetchone())
    assert tuple(pointed) == (60, 60)
    assert sum(r.duplicate_delivery for results in outcomes for r in results) == 60  # type: ignore[attr-defined]
    for queue in replicas:
        queue.close()


def test_an_entry_another_replica_appends_while_verify_reads_is_no_finding(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit verify` read the head, then the entries page by page, each in a transaction of
    its own: an entry another replica appended in between made the trail longer than the head
    read, reported as tampering (exit 1). Head and entries are now read in one snapshot."""
    from promoter.adapters.postgres_state.connection import PgConnection
    from promoter.service import audit_table

    monkeypatch.setattr(audit_table, "PAGE", 2)  # the entries in several pages
    trail = AuditTrail(tmp_path, connect(postgres_url, tmp_path))
    for n in range(5):
        trail.record("job.done", n=n)
    other_replica = AuditTrail(tmp_path, connect(postgres_url, tmp_path))
    execute, pending = PgConnection.execute, [True]

    def append_after_the_head_read(conn: PgConnection, sql: str, parameters: object = (),
                                   /) -> object:
        cursor = execute(conn, sql, parameters)
        if "FROM audit_head" in sql and pending:
            pending.clear()  # the replica's append reads the head too
            other_replica.record("job.done", actor="replica-2")
        return cursor

    monkeypatch.setattr(PgConnection, "execute", append_after_the_head_read)
    assert trail.verify() is None
    assert not pending
    monkeypatch.undo()
    assert trail.verify() is None
    assert len(list(trail.entries())) == 6


def test_an_audit_entry_quoting_what_no_store_holds_is_written_and_verifies(
        postgres_url: str, tmp_path: Path) -> None:
    """A reason quoting an undecodable file name (a lone surrogate) or a NUL: written with
    those characters escaped, on both the file trail and the database's, and verifiable."""
    for trail in (AuditTrail(tmp_path / "files"), AuditTrail(tmp_path, connect(postgres_url,
                                                                              tmp_path))):
        trail.record("job.dead", reason="cannot read caf\udce9.yaml", note="a NUL \x00 here")
        entry = list(trail.entries())[-1]
        assert entry["reason"] == "cannot read caf\\udce9.yaml"
        assert entry["note"] == "a NUL \\x00 here"
        assert trail.verify() is None


def test_a_trail_cut_short_in_the_database_stays_broken_after_the_next_append(
        postgres_url: str, tmp_path: Path) -> None:
    """Deleting the last rows of audit_entries (but not audit_head): the next append chains
    onto the recorded head, so `audit verify` still finds the cut instead of a sealed-over
    chain."""
    db = connect(postgres_url, tmp_path)
    trail = AuditTrail(tmp_path, db)
    for n in range(3):
        trail.record("job.done", n=n)
    trail.record("mr.merge_foreign", actor="alice")
    db.write(lambda conn: conn.execute(
        "DELETE FROM audit_entries WHERE position = (SELECT MAX(position) FROM audit_entries)"))
    assert trail.verify() is not None
    trail.record("job.created", n=9)
    finding = trail.verify()
    assert finding is not None and finding.line == 4


@pytest.mark.parametrize(("old", "new"), [
    ('"model": "m"', '"model": ' + "[" * 100_000 + "]" * 100_000),   # RecursionError
    ('"seq": 3', '"seq": 1e999'),                                      # OverflowError
], ids=["deep-nesting", "infinite-seq"])
def test_the_last_audit_row_edited_past_reading_does_not_stop_the_appends(
        postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, old: str,
        new: str) -> None:
    """Reading back the last row raised on every append from then on (no outcome could be
    recorded again by any replica); the next entry chains onto the recorded head, logged."""
    import json

    from promoter.core.audit_chain import head_of

    db = connect(postgres_url, tmp_path)
    trail = AuditTrail(tmp_path, db)
    for n in range(3):
        trail.record("job.done", model="m", n=n)
    head = trail.recorded_head()
    line = list(trail.lines())[-1]
    assert old in line
    db.write(lambda conn: conn.execute("UPDATE audit_entries SET line = ? WHERE position = 3",
                                       (line.replace(old, new),)))
    with caplog.at_level("ERROR", logger="promoter.audit"):
        entry = trail.record("job.created", n=9)
    assert head is not None and entry["prev"] == head.hash and entry["seq"] == head.seq + 1
    assert "not at its recorded head" in caplog.text
    finding = trail.verify()
    assert finding is not None and finding.line == 3
    assert json.loads(list(trail.lines())[-1]) == entry
    assert trail.recorded_head() == head_of(entry)
    db.close()


def test_pooled_sessions_are_ended_by_the_server_when_their_replica_is_cut_off(
        postgres_url: str, tmp_path: Path) -> None:
    """A replica cut off inside a transaction kept its session, and its advisory locks, for
    the kernel's 2 hours: every other replica's writer waited on the lock and answered no
    delivery. Each pooled session sets server-side keepalives and an idle-in-transaction
    limit."""
    db = connect(postgres_url, tmp_path)

    def shown(conn: Connection) -> dict[str, str]:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0])
                for name in ("tcp_keepalives_idle", "tcp_keepalives_interval",
                             "tcp_keepalives_count", "idle_in_transaction_session_timeout")}

    settings = db.read(shown)
    db.close()
    assert settings == {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10",
                        "tcp_keepalives_count": "3",
                        "idle_in_transaction_session_timeout": "5min"}


class _LeadMovesWhileListing(MemoryRegistry):
    """Two registered models, each with a production alias; listing the second ends the
    leader's session (as a network cut would) and a follower takes the lead."""

    def __init__(self, db: PostgresStateDB) -> None:
        super().__init__()
        self.db = db
        self.follower = db.leadership("reconcile")
        for model in ("alpha", "beta"):
            self.add(model, "1")
            self.set_alias(model, "production", "1")

    def models(self) -> Iterator[RegisteredModelInfo]:
        for index, model in enumerate(super().models()):
            if index == 1:
                self.db.write(lambda conn: conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                    "locktype = 'advisory' AND granted AND pid <> pg_backend_pid()").fetchall())
                assert self.follower.held()
            yield model

    def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
        yield ModelVersionInfo("alpha", "1", "s3://b/alpha/1", None, None,
                               last_updated_ms=5_000)


def test_a_reconcile_leader_losing_its_session_mid_pass_stops_before_its_writes(
        postgres_url: str, tmp_path: Path) -> None:
    """The leader's session ends while it lists models and a follower leads at once: the old
    leader writes nothing for the models after that and leaves the version cursor, so two
    leaders never write one pass's records over each other."""
    db = connect(postgres_url, tmp_path)
    leadership = db.leadership("reconcile")
    assert leadership.held()
    registry = _LeadMovesWhileListing(db)
    queue, state = JobQueue(db), ReconcileState(db)
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path)})
    report = reconcile_once(settings, registry, queue, state, leading=leadership.held)
    assert report.stopped_at == "beta"
    assert [job.key.model for job in queue.list()] == ["alpha"]
    assert set(state.observed()) == {"alpha"}
    assert state.cursor() == 0
    registry.follower.release()
    db.close()


def test_a_reconcile_leader_that_lost_the_lead_in_its_pass_leaves_the_mr_sweep(
        postgres_url: str, tmp_path: Path) -> None:
    db = connect(postgres_url, tmp_path)
    registry = _LeadMovesWhileListing(db)
    config = tmp_path / "promoter.yaml"
    config.write_text("server:\n  reconcile_interval_seconds: 60\n")
    settings = load_settings(config, {"PROMOTER_STATE_DIR": str(tmp_path)})
    sweeps: list[str] = []
    run_periodically(settings, registry, JobQueue(db), lambda _seconds: True, None,
                     lambda: sweeps.append("swept"), lambda: sweeps.append("retried"))
    assert sweeps == []  # the new leader's own pass runs them
    assert registry.follower.held()
    registry.follower.release()
    db.close()


def test_a_reconcile_pass_that_lost_the_lead_leaves_the_cursor_even_when_nothing_changed(
        postgres_url: str, tmp_path: Path) -> None:
    """Most passes change no target: the cursor is the one write such a pass makes, and a
    leader that lost its session must not move it under its successor."""
    db = connect(postgres_url, tmp_path)

    class Updated(MemoryRegistry):
        def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
            yield ModelVersionInfo("alpha", "1", "s3://b/alpha/1", None, None,
                                   last_updated_ms=9_000)

    registry = Updated()
    registry.add("alpha", "1")
    state = ReconcileState(db)
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path)})
    report = reconcile_once(settings, registry, JobQueue(db), state, leading=lambda: False)
    assert report.jobs == [] and state.cursor() == 0
    db.close()


def test_an_audit_row_inserted_after_the_head_is_never_adopted(
        postgres_url: str, tmp_path: Path) -> None:
    """A well-sealed entry inserted after the last row, audit_head left alone: the next
    append took it for one a crash wrote, chained onto it and made it the head, and verify
    passed again. An entry and its head move in one transaction here, so no crash leaves one
    behind: the next append chains onto the recorded head and the insertion stays reported."""
    import json

    from promoter.core.audit_chain import head_of, seal

    db = connect(postgres_url, tmp_path)
    trail = AuditTrail(tmp_path, db)
    for n in range(3):
        trail.record("job.done", n=n)
    last = json.loads(list(trail.lines())[-1])
    forged = seal({"time": last["time"], "event": "mr.merge", "model": "m", "env": "prod",
                   "version": "666"}, head_of(last))
    db.write(lambda conn: conn.execute("INSERT INTO audit_entries (position, line) VALUES "
                                       "(?, ?)", (4, json.dumps(forged, sort_keys=True))))
    finding = trail.verify()
    assert finding is not None and finding.line == 4
    trail.record("job.created", n=9)
    finding = trail.verify()
    assert finding is not None and finding.line == 4 and "inserted" in finding.problem
    assert trail.recorded_head() == head_of(list(trail.entries())[-1])
    db.close()


def test_an_audit_row_inserted_by_hand_never_counts_for_a_decision(
        postgres_url: str, tmp_path: Path) -> None:
    """A well-sealed merge inserted into audit_entries: the soak clock and "what is live now"
    read every row, so it soaked a version never deployed. Rows from the first bad one on
    never count, on PostgreSQL as on files."""
    import json

    from promoter.core.audit_chain import head_of, seal

    db = connect(postgres_url, tmp_path)
    trail = AuditTrail(tmp_path, db)
    trail.record("mr.merge", model="m", env="staging", version="1", status="merged")
    last = json.loads(list(trail.lines())[-1])
    forged = seal({"time": 0, "event": "mr.merge", "model": "m", "env": "staging",
                   "version": "666", "status": "merged"}, head_of(last))
    db.write(lambda conn: conn.execute("INSERT INTO audit_entries (position, line) VALUES "
                                       "(?, ?)", (2, json.dumps(forged, sort_keys=True))))
    assert [e["version"] for e in trail.entries()] == ["1", "666"]
    assert trail.live_since("m", "666", "staging") is None
    assert trail.live_since("m", "1", "staging") == last["time"]
    assert trail.live_now("staging")["m"].version == "1"
    assert trail.doubt() is not None and "line 2" in trail.doubt()  # type: ignore[operator]
    db.close()
