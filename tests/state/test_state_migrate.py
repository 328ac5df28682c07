"""`promoter state migrate --to postgresql://…`: the SQLite state directory, row for row, in
PostgreSQL — jobs with their ids, every store's rows, the audit chain still verifying."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from promoter.adapters.local_mrs import LocalMrStore
from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
from promoter.core.cluster_status import ClusterStatus, summarise
from promoter.core.reconcile import Observed
from promoter.ports.pipeline import DeployedState
from promoter.service.audit import AuditTrail
from promoter.service.cluster_status_store import StatusStore
from promoter.service.ledger import StateLedger
from promoter.service.queue import JobKey, JobQueue
from promoter.service.reconcile import ReconcileState
from promoter.state.copy import TABLES
from promoter.state.db import StateDB
from promoter.state.pushed_heads import PushedHeads

Run = Callable[..., tuple[int, str, str]]


def fill_sqlite_state(state_dir: Path) -> None:
    db = StateDB.open(state_dir)
    queue = JobQueue(db)
    first = queue.enqueue(JobKey("fraud", "7", "production", "promote"), {"alias": "p"},
                          source="mlflow", delivery_id="d-1").job
    queue.enqueue(JobKey("churn", "2", "staging", "promote"), source="reconcile")
    claimed = queue.claim("w")
    assert claimed is not None and claimed.id == first.id
    queue.record_step(first.id, "render", {"files": 3}, worker_id="w")
    queue.complete(first.id, "w", {"mr": 1})
    queue.enqueue(JobKey("fraud", "8", "production", "promote"), source="mlflow",
                  delivery_id="d-2")
    queue.record_delivery("gitlab", "hook-1")
    StateLedger(db).put(DeployedState("fraud", "production", "fraud", "7", "mr_opened", 1))
    StateLedger(db).claim_name("fraud", "fraud", "staging")  # a proposal under way
    PushedHeads(db).record(0, 1, "promote/fraud/production", "a" * 40, "7", "fraud")
    mrs = LocalMrStore(db)
    iid = mrs.create("promote/fraud/production", "main", "Promote fraud 7", "body", ["x"])
    mrs.add_note(iid, "note")
    mrs.add_approval(iid, "alice", "a" * 40)
    reconcile = ReconcileState(db)
    reconcile.save("fraud", {"production": Observed("7", None)})
    reconcile.save_cursor(1_800_000_000_000)
    status = StatusStore(db)
    told, _, _ = status.record("fraud", "production", [ClusterStatus(
        "fraud", "production", "gpu-1", "Synced", "Healthy", "abc", None, "fraud-prod")],
        complete=True, summary=lambda rows: summarise(rows, None))
    status.told("fraud", "production", told)
    status.record("fraud", "production", [ClusterStatus(  # observed, its telling under way
        "fraud", "production", "gpu-2", "Synced", "Degraded", "abc", None, "fraud-prod-2")],
        complete=False, summary=lambda rows: summarise(rows, None))
    status.record("fraud", "production", [], complete=False,  # a deleted Application's
                  summary=lambda rows: summarise(rows, None), deleted=[ClusterStatus(
                      "fraud", "production", "gpu-3", "Synced", "Healthy", "abc",
                      "2026-01-01T10:05:00Z", "fraud-prod-3")])
    trail = AuditTrail(state_dir)
    for n in range(5):
        trail.record("job.done", actor="test", n=n)
    db.close()


def rows(db: StateDB, table: str) -> list[tuple[object, ...]]:
    return sorted((tuple(row) for row in db.read(lambda conn: conn.execute(
        f"SELECT * FROM {table}").fetchall())), key=repr)


def test_state_migrate_copies_every_row_and_the_audit_chain(
        run_cli: Run, tmp_path: Path, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir = tmp_path / "state"
    fill_sqlite_state(state_dir)

    code, out, err = run_cli("state", "migrate", "--to", postgres_url)
    assert code == 0, err
    assert "jobs" in out and "audit_entries" in out

    source = StateDB.open(state_dir)
    target = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=state_dir)
    for table in TABLES:
        assert rows(target, table) == rows(source, table), table
    assert rows(target, "jobs") and rows(target, "local_mr_notes")  # the test copied something
    assert target.read(lambda conn: conn.execute(       # a claim stays as young as it was
        "SELECT claimed_env, claimed_at FROM deployment_names").fetchone()[1]) is not None
    source_trail, target_trail = AuditTrail(state_dir), AuditTrail(state_dir, target)
    assert list(target_trail.lines()) == list(source_trail.lines())
    assert target_trail.recorded_head() == source_trail.recorded_head()

    # promoter on the new database: the chain verifies, and new rows continue after the ids.
    monkeypatch.setenv("PROMOTER_STATE_URL", postgres_url)
    code, out, err = run_cli("audit", "verify")
    assert code == 0 and "ok: 5 chained entries" in out, err
    queue = JobQueue(target)
    newest = max(row[0] for row in rows(target, "jobs"))
    assert queue.enqueue(JobKey("new-model", "1", "staging", "promote")).job.id > newest
    target_trail.record("after.migration")
    assert target_trail.verify() is None
    # The deleted Application's cluster is still no cluster, and its late report stays out.
    moved = StatusStore(target)
    assert [row.cluster for row in moved.rows("fraud", "production")] == ["gpu-1", "gpu-2"]
    moved.record("fraud", "production", [ClusterStatus(
        "fraud", "production", "gpu-3", "Synced", "Degraded", "abc", "2026-01-01T10:04:00Z",
        "fraud-prod-3")], complete=False, summary=lambda rows: summarise(rows, None))
    assert [row.cluster for row in moved.rows("fraud", "production")] == ["gpu-1", "gpu-2"]
    source.close()
    target.close()


def test_state_migrate_refuses_a_target_that_holds_state_unless_told_to_replace_it(
        run_cli: Run, tmp_path: Path, postgres_url: str) -> None:
    fill_sqlite_state(tmp_path / "state")
    assert run_cli("state", "migrate", "--to", postgres_url)[0] == 0
    code, _, err = run_cli("state", "migrate", "--to", postgres_url)
    assert code == 1 and "already holds state" in err and "--replace" in err
    code, out, err = run_cli("state", "migrate", "--to", postgres_url, "--replace",
                             "--output", "json")
    assert code == 0, err
    assert json.loads(out)["rows"]["jobs"] == 3


def test_state_migrate_needs_a_password_free_postgresql_url(run_cli: Run,
                                                             tmp_path: Path) -> None:
    fill_sqlite_state(tmp_path / "state")
    code, _, err = run_cli("state", "migrate", "--to", "postgresql://u:hunter2@db/state")
    assert code == 1 and "PROMOTER_STATE_PASSWORD" in err and "hunter2" not in err
    code, _, err = run_cli("state", "migrate", "--to", "sqlite:///x.db")
    assert code == 1 and "postgresql://" in err and "a sqlite:// one" in err


@pytest.mark.parametrize("to", ["host=db user=promoter password=hunter2 dbname=x",
                                "password=hunter2:x", "promoter:hunter2@db/state",
                                "hunter2:x@db/state"])
def test_state_migrate_does_not_echo_a_connection_string_it_refuses(
        run_cli: Run, tmp_path: Path, to: str) -> None:
    """README: messages never show the password; a libpq key=value string is no URL, and
    nothing of it past a scheme is quoted back."""
    fill_sqlite_state(tmp_path / "state")
    code, _, err = run_cli("state", "migrate", "--to", to)
    assert code == 1 and "must be a postgresql:// URL" in err, err
    assert "hunter2" not in err


@pytest.mark.parametrize(("url", "says"), [
    ("postgresql://u@127.0.0.1:notaport/db", "'notaport', which is not a port number"),
    ("postgresql://u@127.0.0.1/db?sslmode=bogus", "sslmode 'bogus'"),
    ("postgresql://u@127.0.0.1/db?bogus=1", "is malformed"),
    ("postgresql://u@[::1/db", "not a well-formed URL"),
])
def test_state_migrate_refuses_a_url_libpq_would_refuse(run_cli: Run, tmp_path: Path,
                                                        url: str, says: str) -> None:
    """A typo in --to is the user's to fix (exit 1), not an outage to wait out (exit 3), and
    a malformed host is not mistaken for a password."""
    fill_sqlite_state(tmp_path / "state")
    code, _, err = run_cli("state", "migrate", "--to", url)
    assert code == 1 and says in err, err
    assert "password" not in err


@pytest.mark.parametrize("promoter", ["current", "older"])
def test_state_migrate_copies_an_entry_a_crash_left_before_its_head_moved(
        run_cli: Run, tmp_path: Path, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch, promoter: str) -> None:
    """The files' head names the entry a crash wrote but did not confirm (or, written by a
    promoter from before such names, names none, and the entry chains onto it); the database
    keeps no such note, so the copy records that entry as its head and verifies."""
    from tests.test_audit_trail import (
        _Crash,
        crash_as_an_older_promoter_did,
        crash_before_the_head_moves,
    )

    state_dir = tmp_path / "state"
    fill_sqlite_state(state_dir)
    if promoter == "older":
        crash_as_an_older_promoter_did(AuditTrail(state_dir))
    else:
        with monkeypatch.context() as patched:
            crash_before_the_head_moves(patched)
            with pytest.raises(_Crash):
                AuditTrail(state_dir).record("job.done", actor="test", n=5)
    code, _, err = run_cli("state", "migrate", "--to", postgres_url)
    assert code == 0, err
    target = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=state_dir)
    trail = AuditTrail(state_dir, target)
    assert trail.recorded_head().seq == 6  # type: ignore[union-attr]
    assert trail.verify() is None
    trail.record("after.migration")
    assert trail.verify() is None
    target.close()


def test_state_migrate_escapes_a_nul_an_older_promoter_left_in_a_job_reason(
        run_cli: Run, tmp_path: Path, postgres_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Before reasons were made storable, a NUL from an error body went into SQLite as it came;
    PostgreSQL text cannot hold it, so the copy writes it as the writers do now (\\x00)."""
    import sqlite3

    state_dir = tmp_path / "state"
    fill_sqlite_state(state_dir)
    with sqlite3.connect(state_dir / "state.db") as conn:
        conn.execute("UPDATE jobs SET state = 'dead', reason = ? WHERE id = 2", ("boom\x00tail",))
    conn.close()

    code, _, err = run_cli("state", "migrate", "--to", postgres_url)
    assert code == 0, err
    assert "jobs row id=2: reason holds what PostgreSQL cannot store" in caplog.text
    source = StateDB.open(state_dir)
    target = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=state_dir)
    reason = "SELECT reason FROM jobs WHERE id = 2"
    assert target.read(lambda conn: conn.execute(reason).fetchone()[0]) == "boom\\x00tail"
    assert source.read(lambda conn: conn.execute(reason).fetchone()[0]) == "boom\x00tail"
    for table in TABLES:  # every other value as it was
        if table != "jobs":
            assert rows(target, table) == rows(source, table), table
    assert [row for row in rows(target, "jobs") if row[0] != 2] == \
        [row for row in rows(source, "jobs") if row[0] != 2]
    assert AuditTrail(state_dir, target).verify() is None
    source.close()
    target.close()


def test_state_migrate_names_an_audit_line_holding_a_nul_instead_of_altering_it(
        run_cli: Run, tmp_path: Path, postgres_url: str) -> None:
    """The chain's hashes cover each line's bytes: a NUL (never written by promoter: JSON
    escapes it) is not escaped on the way, the line is named (exit 1) and nothing copied."""
    state_dir = tmp_path / "state"
    fill_sqlite_state(state_dir)
    with (state_dir / "audit.jsonl").open("ab") as trail:
        trail.write(b'{"event": "edited\x00", "seq": 6}\n')
    code, _, err = run_cli("state", "migrate", "--to", postgres_url)
    assert code == 1, err
    assert "audit.jsonl:6 holds a NUL byte" in err and "audit_entries" in err
    assert "reachable" not in err
    target = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=state_dir)
    assert rows(target, "jobs") == []
    target.close()


def test_state_migrate_copies_a_state_directory_still_in_the_old_six_file_layout(
        run_cli: Run, tmp_path: Path, postgres_url: str) -> None:
    """`jobs list` on such a directory imports the files and shows their jobs; the migration
    must too, not call it empty and leave the operator a database without them."""
    from tests.state.old_layout import write_old_layout

    state_dir = tmp_path / "state"
    write_old_layout(state_dir)
    assert not (state_dir / "state.db").exists()
    code, out, err = run_cli("state", "migrate", "--to", postgres_url, "--output", "json")
    assert code == 0, err
    assert json.loads(out)["rows"]["jobs"] == 3
    target = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=state_dir)
    assert [row[0] for row in rows(target, "jobs")] == [1, 2, 5]
    imported = StateDB.open(state_dir)  # the files were imported into state.db on the way
    assert not (state_dir / "promoter.db").exists()
    for table in TABLES:
        assert rows(target, table) == rows(imported, table), table
    assert rows(target, "local_mrs") and rows(target, "pushed_heads")
    imported.close()
    target.close()


def test_state_migrate_refuses_a_directory_without_any_state(run_cli: Run,
                                                             postgres_url: str) -> None:
    code, _, err = run_cli("state", "migrate", "--to", postgres_url)
    assert code == 1 and "there is no SQLite state to copy" in err, err


def test_a_half_written_last_line_copied_into_postgresql_is_passed_over_as_in_the_file(
        run_cli: Run, tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An append interrupted mid-line leaves a half line at the trail's end. The file chain
    ends it there and chains on from the entry before it (one ERROR saying so); the copy in
    audit_entries must be read the same way, not as the trail cut short at entry 0 on every
    append. `audit verify` still names the half line."""
    import logging

    state_dir = tmp_path / "state"
    fill_sqlite_state(state_dir)
    with (state_dir / "audit.jsonl").open("ab") as trail:
        trail.write(b'{"seq": 6, "ev')
    code, _, err = run_cli("state", "migrate", "--to", postgres_url)
    assert code == 0, err
    target = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=state_dir)
    moved = AuditTrail(state_dir, target)
    with caplog.at_level(logging.WARNING, logger="promoter.audit"):
        first = moved.record("after.migration", n=1)
        second = moved.record("after.migration", n=2)
    assert (first["seq"], second["seq"]) == (6, 7)
    assert "cut short" not in caplog.text and "not at its recorded head" not in caplog.text
    assert caplog.text.count("half-written line") == 1
    monkeypatch.setenv("PROMOTER_STATE_URL", postgres_url)
    code, _, err = run_cli("audit", "verify")
    assert code == 1 and ":6:" in err and "half-written line" in err, err
    target.close()
