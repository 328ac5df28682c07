"""The old layout as the old code itself wrote it: the modules of the last commit before
state.db, run in a subprocess, fill a state directory that today's code must import whole."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from promoter.adapters.local_mrs import LocalMrStore
from promoter.core.reconcile import Observed
from promoter.service.gitlab_hook import DeliveryLog
from promoter.service.hook_deliveries import HookClaim
from promoter.service.ledger import StateLedger
from promoter.service.queue import JobKey, JobQueue
from promoter.service.reconcile import ReconcileState
from promoter.state.db import StateDB
from promoter.state.pushed_heads import PushedHeads
from tests.conftest import ROOT

OLD_COMMIT = "2d892f9"  # the last commit with the six-file layout
OLD_WRITER = r'''
import sys
from pathlib import Path

import promoter
from promoter.adapters.gitlab_ledger import PushLedger
from promoter.adapters.local_mrs import LocalMrStore
from promoter.core.reconcile import Observed
from promoter.errors import PermanentError
from promoter.ports.pipeline import DeployedState
from promoter.service.gitlab_hook import DeliveryLog
from promoter.service.ledger import SqliteLedger
from promoter.service.queue import JobKey, JobQueue
from promoter.service.reconcile import ReconcileState
from promoter.service.worker import Worker

state = Path(sys.argv[1])
queue = JobQueue.open(state)
queue.enqueue(JobKey("fraud", "7", "production", "promote"), {"alias": "production"},
              source="mlflow", delivery_id="m-1")
queue.enqueue(JobKey("churn", "3", "staging", "promote"), source="databricks",
              delivery_id="d-1")
queue.record_delivery("mlflow", "m-ignored")


def handler(job, ctx):
    if job.key.model == "churn":
        raise PermanentError("GitLab answered 403")
    ctx.record_step("render", {"files": 4})
    return {"mr_url": "http://gitlab/!12"}


worker = Worker(queue, handler, worker_id="old", heartbeat=False)
while worker.run_once():
    pass
queue.enqueue(JobKey("fraud", "8", "production", "promote"))
queue.close()
SqliteLedger(state).put(DeployedState("fraud", "production", "fraud", "7", "mr_opened", 12,
                                       "a" * 40))
reconcile = ReconcileState(state)
reconcile.save("fraud", {"production": Observed("7", None)})
reconcile.save_cursor(1700000000123)
reconcile.close()
hooks = DeliveryLog(state / "gitlab-hooks.db")
hooks.claim("hook-1")
hooks.finish("hook-1", "accepted")
PushLedger.in_state_dir(state).record(42, 12, "promote/fraud/production", "a" * 40, "7")
mrs = LocalMrStore(state / "local-mrs.db")
iid = mrs.create("promote/churn/staging", "main", "Promote churn v3", "body", ["promoter"])
mrs.update(iid, approved_by=["alice"])
mrs.add_note(iid, "a bot note")
print(promoter.__file__)
'''


@pytest.fixture
def old_code(tmp_path: Path) -> Path:
    archive = subprocess.run(["git", "archive", OLD_COMMIT, "promoter"], cwd=ROOT,
                             capture_output=True, check=False, timeout=60)
    if archive.returncode != 0:  # a shallow clone without that commit
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone: {archive.stderr[:200]!r}")
    target = tmp_path / "old-code"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def test_a_state_dir_written_by_the_old_code_is_imported_whole(old_code: Path,
                                                               tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(old_code)}
    written = subprocess.run([sys.executable, "-c", OLD_WRITER, str(state)], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip().startswith(str(old_code))  # really the old modules
    assert {"promoter.db", "deployments.db", "reconcile.db", "gitlab-hooks.db",
            "gitlab-pushes.db", "local-mrs.db"} <= {p.name for p in state.iterdir()}

    db = StateDB.open(state)
    queue = JobQueue(db)
    assert [(j.id, j.key.model, j.key.version, j.state) for j in queue.list()] == [
        (3, "fraud", "8", "queued"), (2, "churn", "3", "dead"), (1, "fraud", "7", "done")]
    assert queue.steps(1) == {"render": {"files": 4}}
    assert queue.get(2).reason == "PermanentError: GitLab answered 403"
    assert queue.enqueue(JobKey("fraud", "7", "production", "promote"), source="mlflow",
                         delivery_id="m-1").duplicate_delivery
    assert not queue.record_delivery("databricks", "d-1")
    assert not queue.record_delivery("mlflow", "m-ignored")
    assert DeliveryLog(db).claim("hook-1").outcome is HookClaim.DONE
    deployed = StateLedger(db).get("fraud", "production")
    assert deployed is not None and (deployed.version, deployed.mr_iid, deployed.head_sha) == (
        "7", 12, "a" * 40)
    assert PushedHeads(db).pushed_sha(42, 12) == "a" * 40
    reconcile = ReconcileState(db)
    assert reconcile.observed() == {"fraud": {"production": Observed("7", None)}}
    assert reconcile.cursor() == 1700000000123
    mr = LocalMrStore(db).get(1)
    assert mr is not None and (mr["source_branch"], mr["approved_by"], mr["labels"]) == (
        "promote/churn/staging", ["alice"], ["promoter"])
    assert LocalMrStore(db).notes(1) == [(1, "a bot note")]
    db.close()
