"""`promoter policy check` with the state in PostgreSQL (state.url) writes nothing there: its
sessions are READ ONLY and the schema is checked, never created or migrated. A schema that is
missing or older than this promoter's is said as NOT CHECKED (the ledger's half of the name
check), the rest answered; a current one is read as the pipeline reads it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
from promoter.adapters.postgres_state.schema import MIGRATIONS, SCHEMA_VERSION, VERSIONS_TABLE
from promoter.service.ledger import StateLedger
from promoter.state.db import StateUnavailable
from tests.commands.test_policy_check import GATES
from tests.commands.test_render import VALID, write_intent

Run = Callable[..., tuple[int, str, str]]


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return sorted(row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))


def schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT MAX(version) FROM {VERSIONS_TABLE}").fetchone()
        assert row is not None
        return int(row[0])


def check(run_cli: Run, tmp_path: Path, url: str, *extra: str) -> tuple[int, str, str]:
    config = tmp_path / "promoter.yaml"
    config.write_text(json.dumps({"state": {"url": url}, "policy": GATES}))
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    return run_cli("--config", str(config), "policy", "check", "--intent", str(intent),
                   "--env", "staging", *extra)


@pytest.mark.e2e
def test_an_empty_database_is_not_migrated(run_cli: Run, tmp_path: Path,
                                           postgres_url: str) -> None:
    code, out, err = check(run_cli, tmp_path, postgres_url)
    assert code == 0, out + err
    assert "NOT CHECKED  deployment name owned by another model in the ledger (the state " \
           "database" in out
    assert "has no promoter schema yet" in out
    assert out.rstrip().endswith("allowed")
    assert tables(postgres_url) == []      # no versions table, no promoter table


@pytest.mark.e2e
def test_an_older_schema_is_not_migrated(run_cli: Run, tmp_path: Path,
                                         postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:   # what a promoter of schema 3 left
        conn.execute(f"CREATE TABLE {VERSIONS_TABLE} (version INTEGER PRIMARY KEY, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for version in range(3):
            conn.execute(MIGRATIONS[version].encode())
            conn.execute(f"INSERT INTO {VERSIONS_TABLE} (version) VALUES (%s)",
                         (version + 1,))
    before = tables(postgres_url)
    code, out, err = check(run_cli, tmp_path, postgres_url, "--output", "json")
    assert code == 0, out + err
    answer = json.loads(out)
    assert answer["allowed"] is True
    assert answer["not_checked"] == [{
        "checks": ["deployment name owned by another model in the ledger"],
        "reason": answer["not_checked"][0]["reason"]}]
    assert f"has schema 3, older than this promoter's {SCHEMA_VERSION}" in \
           answer["not_checked"][0]["reason"]
    assert schema_version(postgres_url) == 3
    assert tables(postgres_url) == before


@pytest.mark.e2e
def test_a_current_schema_is_read_in_read_only_sessions(run_cli: Run, tmp_path: Path,
                                                        postgres_url: str) -> None:
    """The ledger says another model owns the name: refused as the pipeline refuses it; and
    the sessions the check reads through refuse writes (the server's guarantee)."""
    writer = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=tmp_path / "state")
    try:
        assert StateLedger(writer).claim_name("fraud-detector", "Other Model", "staging") \
            == frozenset()
    finally:
        writer.close()
    code, out, err = check(run_cli, tmp_path, postgres_url)
    assert code == 1, out + err
    assert "Other Model" in err and "NOT CHECKED" not in out

    reader = PostgresStateDB.open_read_only(StateUrl(postgres_url))
    try:
        assert StateLedger(reader).owners("fraud-detector") == frozenset({"Other Model"})
        with pytest.raises(StateUnavailable):
            reader.write(lambda conn: conn.execute(
                "INSERT INTO deployment_names (name, model) VALUES ('x', 'y')"))
    finally:
        reader.close()
    assert not (tmp_path / "state").exists()
