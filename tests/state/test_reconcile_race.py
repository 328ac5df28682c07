"""Two reconcile passes writing at once on PostgreSQL (READ COMMITTED): a model's record and
the cursor with its retry list are replaced whole, never broken by the other writer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
from promoter.core.reconcile import Observed
from promoter.service.reconcile import ReconcileState

ROUNDS = 100


def _at_once(postgres_url: str, tmp_path: Path,
             write: Callable[[ReconcileState, int, int], None]) -> tuple[ReconcileState,
                                                                         list[Exception]]:
    """``write(state, writer, round)`` ROUNDS times in each of two threads, each on its own
    PostgresStateDB (as two processes would be); the failures, and a third state to read."""
    dbs = [PostgresStateDB.connect(StateUrl(postgres_url), state_dir=tmp_path)
           for _ in range(3)]
    states = [ReconcileState(db) for db in dbs]
    failures: list[Exception] = []
    start = threading.Barrier(2)

    def run(writer: int) -> None:
        start.wait()
        for n in range(ROUNDS):
            try:
                write(states[writer], writer, n)
            except Exception as exc:  # collected, asserted on below
                failures.append(exc)

    threads = [threading.Thread(target=run, args=(writer,)) for writer in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for state in states[:2]:
        state.close()
    return states[2], failures


def test_two_passes_saving_one_model_at_once_never_conflict(postgres_url: str,
                                                            tmp_path: Path) -> None:
    """Before, the second writer's DELETE (blocked by the first's rows) matched none of the
    rows the first inserted, and its INSERT broke the primary key: StateConflict."""
    def save(state: ReconcileState, writer: int, n: int) -> None:
        state.save("m", {env: Observed(str(n), str(writer), "Production")
                         for env in ("staging", "production")})

    reader, failures = _at_once(postgres_url, tmp_path, save)
    assert failures == []
    record = reader.observed()["m"]
    assert set(record) == {"staging", "production"}
    # One writer's set, whole: both environments from the same save.
    assert len({(o.alias_version, o.stage_version) for o in record.values()}) == 1
    reader.close()


def test_two_passes_saving_the_cursor_at_once_keep_one_pass_s_retry_list(
        postgres_url: str, tmp_path: Path) -> None:
    """The retry list is replaced wholesale with the cursor: never a mix of both writers'
    lists beside one of their cursors, nor a broken primary key. (A guard: the cursor's
    upsert, the first statement, already serialised these writes before the explicit lock.)"""
    def save_cursor(state: ReconcileState, writer: int, n: int) -> None:
        state.save_cursor(writer * 1_000_000 + n, {"shared", f"only-{writer}"})

    reader, failures = _at_once(postgres_url, tmp_path, save_cursor)
    assert failures == []
    writer = reader.cursor() // 1_000_000
    assert reader.retry() == {"shared", f"only-{writer}"}
    reader.close()
