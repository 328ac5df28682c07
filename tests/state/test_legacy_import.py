"""A state directory in the old six-file layout is imported into state.db on first start."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from promoter.adapters.local_mrs import LocalMrStore, OpenMergeRequestExists
from promoter.core.reconcile import Observed
from promoter.errors import ConfigError
from promoter.service.gitlab_hook import DeliveryLog
from promoter.service.hook_deliveries import HookClaim
from promoter.service.ledger import StateLedger
from promoter.service.queue import JobKey, JobQueue
from promoter.service.reconcile import ReconcileState
from promoter.state.db import StateDB
from promoter.state.legacy import OLD_FILES
from promoter.state.pushed_heads import PushedHeads
from tests.state.old_layout import SHA_A, SHA_B, SHA_LOCAL, write_old_layout


@pytest.fixture
def old_state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    write_old_layout(state_dir)
    return state_dir


def test_every_row_of_the_six_old_files_arrives_in_state_db(old_state: Path) -> None:
    db = StateDB.open(old_state)
    queue = JobQueue(db)
    done, dead, waiting = queue.get(1), queue.get(2), queue.get(5)
    assert (done.state, done.payload, done.result) == (
        "done", {"alias": "production"}, {"mr_url": "http://gitlab/!12"})
    assert queue.steps(1) == {"render": {"files": 4}, "image": {"digest": "sha256:ab"}}
    assert (dead.state, dead.attempts, dead.reason) == ("dead", 8, "PermanentError: 403")
    assert (waiting.key, waiting.state) == (JobKey("fraud", "8", "production", "promote"),
                                           "queued")
    # Dedupe ids: MLflow/Databricks deliveries and GitLab hook keys, all in the one table.
    again = queue.enqueue(JobKey("fraud", "7", "production", "promote"), source="mlflow",
                          delivery_id="m-1")
    assert again.duplicate_delivery and again.job.id == 1
    assert queue.record_delivery("databricks", "d-1") is False
    assert queue.record_delivery("mlflow", "m-ignored") is False
    hooks = DeliveryLog(db)
    assert hooks.claim("hook-1").outcome is hooks.claim("hook-2").outcome is HookClaim.DONE
    assert hooks.claim("hook-3").outcome is HookClaim.ACT
    # New jobs continue after the old ids instead of reusing one.
    assert queue.enqueue(JobKey("new", "1", "staging", "promote")).job.id == 6
    # Ledger rows, with the pushed head read from the one record of pushed heads.
    ledger = StateLedger(db)
    fraud, churn, old = (ledger.get("fraud", "production"), ledger.get("churn", "staging"),
                         ledger.get("old", "staging"))
    assert fraud is not None and (fraud.version, fraud.status, fraud.mr_iid, fraud.head_sha) == (
        "7", "mr_opened", 12, SHA_A)
    assert churn is not None and (churn.status, churn.mr_iid, churn.head_sha) == (
        "merged", 3, SHA_LOCAL)
    assert old is not None and (old.status, old.mr_iid, old.head_sha) == ("closed", None, None)
    pushes = PushedHeads(db)
    assert pushes.pushed_sha(42, 12) == SHA_A and pushes.pushed_sha(42, 13) == SHA_B
    assert pushes.pushed_sha(0, 3) == SHA_LOCAL  # the ledger's own copy, now a push record
    # The reconcile loop's memory and cursor.
    reconcile = ReconcileState(db)
    assert reconcile.observed() == {"fraud": {"production": Observed("7", None)},
                                    "churn": {"staging": Observed(None, "3")}}
    assert reconcile.cursor() == 1_700_000_000_123
    # Local MRs with their notes, approvals, and the one-open-MR-per-branch rule.
    mrs = LocalMrStore(db)
    merged = mrs.get(3)
    assert merged is not None and (merged["state"], merged["approved_by"], merged["labels"]) == (
        "merged", ["alice"], ["promoter"])
    assert mrs.notes(3) == [(1, "<!-- promoter:summary --> ok")]
    with pytest.raises(OpenMergeRequestExists):
        mrs.create("promote/churn/staging", "main", "t", "d", [])
    assert mrs.create("promote/fraud/production", "main", "t", "d", []) == 5
    db.close()


def test_the_old_files_are_moved_to_legacy_and_imported_only_once(old_state: Path) -> None:
    StateDB.open(old_state).close()
    assert not [name for name in OLD_FILES if (old_state / name).exists()]
    assert {path.name for path in (old_state / "legacy").iterdir()} >= set(OLD_FILES)
    # A second start (or a restored copy of an old file) imports nothing twice.
    shutil.copy(old_state / "legacy" / "promoter.db", old_state / "promoter.db")
    db = StateDB.open(old_state)
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]) == 3
    assert (old_state / "legacy" / "promoter.db.1").exists()
    db.close()


def test_concurrent_first_starts_import_the_rows_once(old_state: Path) -> None:
    errors: list[BaseException] = []

    def start() -> None:  # one connection per thread: the same locking as separate processes
        try:
            StateDB.open(old_state).close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    db = sqlite3.connect(old_state / "state.db")
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 3
    assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 5
    db.close()


def test_an_unreadable_old_file_is_refused_and_nothing_is_half_imported(
        old_state: Path) -> None:
    (old_state / "reconcile.db").write_bytes(b"not a database at all" * 200)
    with pytest.raises(ConfigError) as refused:
        StateDB.open(old_state)
    message = str(refused.value) + (refused.value.hint or "")
    assert "cannot read the old state file" in message and "reconcile.db" in message
    assert "move it out of" in message  # says what to do
    assert all((old_state / name).exists() for name in OLD_FILES)  # left for the operator
    db = sqlite3.connect(old_state / "state.db")
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    db.close()
    # Once the operator moves the broken file away, the rest is imported.
    (old_state / "reconcile.db").rename(old_state.parent / "reconcile.db.broken")
    queue = JobQueue.open(old_state)
    assert len(queue.list()) == 3
    queue.close()


def test_old_files_beside_a_state_db_that_already_has_jobs_are_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    queue = JobQueue.open(state_dir)
    queue.enqueue(JobKey("fraud", "9", "production", "promote"))  # takes job id 1
    queue.close()
    write_old_layout(state_dir)
    with pytest.raises(ConfigError, match="could not import the old state files"):
        StateDB.open(state_dir)
    assert (state_dir / "promoter.db").exists()


def test_old_files_that_cannot_be_moved_are_reported_and_never_imported_twice(
        old_state: Path) -> None:
    (old_state / "legacy").write_text("in the way")  # legacy/ cannot be created
    with pytest.raises(ConfigError, match="could not move them"):
        StateDB.open(old_state)
    (old_state / "legacy").unlink()
    db = StateDB.open(old_state)  # rows already in: only the move is left to do
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]) == 3
    assert not (old_state / "promoter.db").exists()
    db.close()
