"""Reading state.db read-only (`policy check`) creates nothing beside it when no process has
it open (a `mode=ro` connection to a WAL database would create and leave state.db-wal and
state.db-shm), and still sees what a writer that has it open committed to its WAL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from promoter.service.ledger import StateLedger
from promoter.state.db import StateDB
from promoter.state.sqlite import SqliteStateDB


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_a_database_nobody_has_open_is_read_without_creating_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    writer = StateDB.open(state)
    StateLedger(writer).claim_name("fraud-detector", "Other Model", "staging")
    writer.close()   # the last connection: SQLite checkpoints and removes -wal and -shm
    before = listing(state)
    assert "state.db-wal" not in before

    reader = SqliteStateDB.open_read_only(state)
    assert reader is not None
    assert StateLedger(reader).owners("fraud-detector") == frozenset({"Other Model"})
    reader.close()
    assert listing(state) == before


def test_what_a_running_writer_committed_is_read(tmp_path: Path) -> None:
    state = tmp_path / "state"
    writer = StateDB.open(state)   # kept open, as `promoter serve` keeps it
    try:
        ledger = StateLedger(writer)
        ledger.claim_name("fraud-detector", "Other Model", "staging")
        assert (state / "state.db-wal").stat().st_size > 0   # the claim is in the WAL only
        reader = SqliteStateDB.open_read_only(state)
        assert reader is not None
        assert StateLedger(reader).owners("fraud-detector") == frozenset({"Other Model"})
        ledger.claim_name("churn-model", "Churn", "staging")
        assert StateLedger(reader).owners("churn-model") == frozenset({"Churn"})
        reader.close()
    finally:
        writer.close()


def test_a_writer_arriving_during_the_read_has_it_read_again(tmp_path: Path) -> None:
    """The immutable read cannot see a writer that opens the database meanwhile: its answer
    is dropped and the read is made again through the writer's files."""
    from promoter.state import sqlite_read_only

    state = tmp_path / "state"
    StateDB.open(state).close()
    path = state / "state.db"
    calls: list[str] = []
    writer: list[sqlite3.Connection] = []

    def body(conn: sqlite3.Connection) -> int:
        if not calls:   # the first read: a writer opens and commits before it reads
            writer.append(sqlite3.connect(path, isolation_level=None))
            writer[0].execute("INSERT INTO deployment_names (name, model) VALUES ('a', 'A')")
        calls.append("read")
        return int(conn.execute("SELECT COUNT(*) FROM deployment_names").fetchone()[0])

    try:
        assert sqlite_read_only.read(path, body, sqlite3.Connection) == 1
    finally:
        writer[0].close()
    assert calls == ["read", "read"]
