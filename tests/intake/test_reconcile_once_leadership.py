"""`promoter reconcile --once` beside `serve` replicas on a shared PostgreSQL state: it runs
only while holding the reconcile leadership, as the replicas' loop does. Before, it ran its
pass next to the leader's, and the two passes' writes broke each other (StateConflict)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
from promoter.ports.registry import RegisteredModelInfo
from promoter.service.mr_sweep import SweepReport
from promoter.service.queue import JobQueue
from promoter.service.reconcile import LEADERSHIP, ReconcileState
from tests.core.test_pipeline import MemoryRegistry


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
          postgres_url: str) -> Iterator[tuple[PostgresStateDB, list[str]]]:
    """The command on ``postgres_url`` with a registry whose alias moved (a pass enqueues a
    job for it); the list records each MR sweep the command runs."""
    from promoter.commands import reconcile as command
    from promoter.service import composition

    registry = MemoryRegistry()
    registry.add("alpha", "1")
    registry.set_alias("alpha", "production", "1")
    sweeps: list[str] = []

    def sweep(settings: object, registry: object) -> tuple[SweepReport, None]:
        sweeps.append("swept")
        return SweepReport(), None

    monkeypatch.setenv("PROMOTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PROMOTER_STATE_URL", postgres_url)
    monkeypatch.setattr(composition, "registry", lambda settings: registry)
    monkeypatch.setattr(command, "_mr_sweep", sweep)
    db = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=tmp_path)
    yield db, sweeps
    db.close()


def run_once(*args: str) -> int:
    from promoter import cli

    with pytest.raises(SystemExit) as ended:
        cli.main(["reconcile", "--once", *args])
    return int(ended.value.code or 0)


def test_reconcile_once_while_a_replica_leads_runs_nothing_and_exits_0(
        world: tuple[PostgresStateDB, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """A CronJob tick the leading replica's loop already covers is no failure: exit 0, a
    message naming the leader, and no pass (no job, no record, no cursor) nor MR sweep."""
    db, sweeps = world
    replica = db.leadership(LEADERSHIP)
    assert replica.held()
    try:
        assert run_once() == 0
        assert "leads the reconcile loop" in capsys.readouterr().out
        assert run_once("--output", "json") == 0
        assert json.loads(capsys.readouterr().out)["skipped"] is True
        assert JobQueue(db).list() == []
        state = ReconcileState(db)
        assert state.observed() == {} and state.cursor() == 0
        assert sweeps == []
        assert replica.held()  # the run left the lead where it was
    finally:
        replica.release()


def test_reconcile_once_runs_when_nobody_leads_and_lets_go_of_the_lead(
        world: tuple[PostgresStateDB, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    db, sweeps = world
    assert run_once() == 0
    assert "queued job" in capsys.readouterr().out
    assert [job.key.model for job in JobQueue(db).list()] == ["alpha"]
    assert set(ReconcileState(db).observed()) == {"alpha"}
    assert sweeps == ["swept"]
    replica = db.leadership(LEADERSHIP)
    assert replica.held()  # released at the end of the run, not at the process's exit
    replica.release()


def test_reconcile_once_losing_the_lead_mid_pass_stops_and_leaves_the_sweep(
        world: tuple[PostgresStateDB, list[str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Its lead's session ends while it lists models and a replica leads at once: the run
    writes nothing for the models after that, runs no MR sweep, and says why."""
    from promoter.service import composition

    db, sweeps = world
    replica = db.leadership(LEADERSHIP)

    class LeadMoves(MemoryRegistry):
        def models(self) -> Iterator[RegisteredModelInfo]:
            for index, model in enumerate(super().models()):
                if index == 1:  # the run's lead session ends (a network cut, say)
                    db.write(lambda conn: conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                        "'advisory' AND granted AND pid <> pg_backend_pid()").fetchall())
                    assert replica.held()
                yield model

    registry = LeadMoves()
    for name in ("alpha", "beta"):
        registry.add(name, "1")
        registry.set_alias(name, "production", "1")
    monkeypatch.setattr(composition, "registry", lambda settings: registry)
    try:
        assert run_once() == 0
        assert "stopped before the writes for beta" in capsys.readouterr().out
        assert [job.key.model for job in JobQueue(db).list()] == ["alpha"]
        assert sweeps == []
    finally:
        replica.release()
