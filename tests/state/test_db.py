"""The one state database: its file, its settings, its permissions, its migrations."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from promoter.errors import ConfigError
from promoter.service.audit import AuditTrail
from promoter.service.queue import JobKey, JobQueue
from promoter.state.db import StateDB
from promoter.state.schema import MIGRATIONS, SCHEMA_VERSION
from promoter.state.sqlite import BUSY_TIMEOUT_SECONDS
from tests.fixtures.concurrency import run_at_once

TABLES = {"jobs", "job_steps", "deliveries", "deployments", "pushed_heads",
          "reconcile_observed", "reconcile_cursor", "local_mrs", "local_mr_notes", "state_meta"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_one_file_holds_every_table_with_one_durability_setting(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path / "state")
    conn = db.connection()
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names >= TABLES
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_SECONDS * 1000
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted(p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".db") == [
        "state.db"]
    db.close()


def test_each_thread_gets_its_own_connection(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path)
    seen: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: seen.append(db.connection()))
    thread.start()
    thread.join()
    assert seen[0] is not db.connection() and db.connection() is db.connection()
    db.close()


def test_state_dir_is_0700_and_database_files_and_audit_are_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a typical permissive umask: the files must not follow it
    try:
        state = tmp_path / "new" / "state"
        queue = JobQueue.open(state)
        queue.enqueue(JobKey("fraud", "7", "production", "promote"))  # -wal and -shm exist now
        AuditTrail(state).record("job.done", model="fraud")
        assert mode(state) == 0o700
        for name in ("state.db", "state.db-wal", "state.db-shm", "state.db.lock", "audit.jsonl"):
            assert (state / name).exists(), name
            assert mode(state / name) == 0o600, name
        queue.close()
    finally:
        os.umask(old_umask)


def test_first_opens_racing_on_fresh_files_all_succeed_in_wal(tmp_path: Path) -> None:
    # Converting a fresh file to WAL fails at once ("database is locked", no busy wait) when two
    # connections do it together. Without the lock file a round lost that race often enough that
    # sixty rounds never all passed; with it, none may fail.
    for round_number in range(60):
        state = tmp_path / f"round-{round_number}"
        opened, errors = run_at_once(6, lambda _index, state=state: StateDB.open(state))
        assert errors == [], f"round {round_number}"
        assert {db.connection().execute("PRAGMA journal_mode").fetchone()[0]
                for db in opened} == {"wal"}
        for db in opened:
            db.close()


def test_an_existing_state_db_with_loose_permissions_is_tightened(tmp_path: Path) -> None:
    StateDB.open(tmp_path).close()
    (tmp_path / "state.db").chmod(0o644)
    StateDB.open(tmp_path).connection()
    assert mode(tmp_path / "state.db") == 0o600


def test_migrations_run_in_order_from_any_older_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO jobs (model, version, env, action, state, created_at, updated_at, "
                 "next_run_at) VALUES ('m', '1', 'staging', 'promote', 'queued', 1, 1, 1)")
    conn.execute("INSERT INTO deliveries VALUES ('mlflow', 'd-1', 1, 1)")
    conn.close()
    db = StateDB.open(tmp_path)
    conn = db.connection()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [tuple(row) for row in conn.execute(
        "SELECT source, delivery_id, job_id, status FROM deliveries")] == [
        ("mlflow", "d-1", 1, None)]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'deliveries_by_age'"
                        ).fetchone() is not None
    db.close()


def test_cluster_summaries_stored_before_schema_5_count_as_told(tmp_path: Path) -> None:
    """An upgrade tells no environment again: what older promoters stored was told."""
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    conn.executescript(";".join(MIGRATIONS[:4]) + "; PRAGMA user_version = 4;")
    conn.execute("INSERT INTO cluster_summaries VALUES ('fraud', 'production', 'd1', 1)")
    conn.close()
    db = StateDB.open(tmp_path)
    assert [tuple(row) for row in db.connection().execute(
        "SELECT digest, deployed, telling_digest, telling_since "
        "FROM cluster_summaries")] == [("d1", 1, None, None)]
    db.close()


def test_schema_7_gives_up_claims_of_models_decommissioned_everywhere(tmp_path: Path) -> None:
    """Schema 6 kept a claim after its model's last removal MR merged: the name stayed taken
    for good. The upgrade drops those claims; a claim of a model with a live row, or with no
    row yet (its first proposal), stays, and every claim left counts as old (no claimed_at)."""
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    conn.executescript(";".join(MIGRATIONS[:6]) + "; PRAGMA user_version = 6;")
    for row in (("gone", "staging", "gone", "1", "decommissioned"),
                ("gone", "production", "gone", "1", "decommissioned"),
                ("live", "staging", "live", "1", "decommissioned"),
                ("live", "production", "live", "1", "merged")):
        conn.execute("INSERT INTO deployments (model, env, name, version, status) "
                     "VALUES (?, ?, ?, ?, ?)", row)
    conn.executemany("INSERT INTO deployment_names VALUES (?, ?)",
                     [("gone", "gone"), ("live", "live"), ("first", "first")])
    conn.close()
    db = StateDB.open(tmp_path)
    assert sorted(tuple(row) for row in db.connection().execute(
        "SELECT name, model, claimed_env, claimed_at FROM deployment_names")) == [
        ("first", "first", None, None), ("live", "live", None, None)]
    db.close()


def test_a_database_from_a_newer_promoter_is_refused(tmp_path: Path) -> None:
    StateDB.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer promoter"):
        StateDB.open(tmp_path)


def test_opening_the_database_again_in_a_process_keeps_other_processes_in_sync(
        tmp_path: Path) -> None:
    """`serve` opens state.db from several stores while CLI processes come and go. Opening it
    must never release this process's SQLite locks (closing any descriptor of the file drops
    them all), or a CLI's exit checkpoints the WAL away and hides later commits from others."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    count_jobs = ("import sys; from promoter.service.queue import JobQueue; "
                  "q = JobQueue.open(sys.argv[1]); print(len(q.list())); q.close()")

    def jobs_seen_by_another_process() -> int:
        done = subprocess.run([sys.executable, "-c", count_jobs, str(tmp_path)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=60, check=True)
        return int(done.stdout)

    queue = JobQueue.open(tmp_path)
    queue.enqueue(JobKey("fraud", "7", "production", "promote"))
    StateDB.open(tmp_path).connection()  # another store of the same process opens it
    assert jobs_seen_by_another_process() == 1
    queue.enqueue(JobKey("churn", "3", "staging", "promote"))
    assert jobs_seen_by_another_process() == 2
    queue.close()
