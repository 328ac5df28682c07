"""/readyz tells the truth when the state directory cannot be written, and no unauthenticated
answer names a filesystem path.

How the full disk is made: we run as root, so chmod cannot forbid writes, and mounting a tiny
filesystem needs privileges we do not have. What we can do is what a full disk looks like to
one process: ``prlimit(RLIMIT_FSIZE)`` on the running `promoter serve` (the same user may lower
another process's soft limit). From then on every write() of that process at a file offset
beyond the limit fails with EFBIG ("File too large") — SQLite reports it as SQLITE_FULL,
"database or disk is full", exactly the error a full disk gives, and a new file cannot take
its first block either. Raising the limit again is freeing the disk. Nothing is mocked: the
real server, the real queue database, real HTTP.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from promoter.ports.clock import SystemClock
from promoter.service.app import WriteHealth
from promoter.service.verify import sign_mlflow
from tests.fixtures.stack import (
    WEBHOOK_SECRET,
    ServeProcess,
    promoter_environ,
    start_serve,
    write_config,
)
from tests.intake.conftest import CAPTURE_SECRET

pytestmark = pytest.mark.e2e
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/[A-Za-z0-9_.-]+/")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=None)
    process = start_serve(config, promoter_environ(), tmp_path / "serve.log")
    yield process
    restore(process)
    process.stop()


def disk_full(serve: ServeProcess) -> None:
    _, hard = resource.prlimit(serve.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(serve.process.pid, resource.RLIMIT_FSIZE, (1, hard))


def restore(serve: ServeProcess) -> None:
    if serve.alive():
        _, hard = resource.prlimit(serve.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(serve.process.pid, resource.RLIMIT_FSIZE, (hard, hard))


def deliver(serve: ServeProcess, version: int) -> httpx.Response:
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "timestamp": "2026-11-28T10:49:54+00:00",
                       "data": {"name": "fraud", "alias": "staging",
                                "version": str(version)}}).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return httpx.post(f"{serve.url}/webhooks/mlflow", content=body, timeout=30, headers={
        "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign_mlflow(WEBHOOK_SECRET, delivery, stamp, body)})


def readyz(serve: ServeProcess) -> httpx.Response:
    return httpx.get(f"{serve.url}/readyz", timeout=30)


def assert_no_paths(response: httpx.Response, state_dir: Path) -> None:
    assert str(state_dir) not in response.text and "promoter.db" not in response.text
    assert not ABSOLUTE_PATH.search(response.text), response.text


def test_readyz_is_not_ready_while_the_disk_is_full(serve: ServeProcess,
                                                   tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert deliver(serve, 1).status_code == 200
    assert readyz(serve).status_code == 200

    disk_full(serve)
    try:
        refused = deliver(serve, 2)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "unavailable"
        assert_no_paths(refused, state_dir)

        answer = readyz(serve)
        assert answer.status_code == 503, answer.text
        assert answer.json()["checks"]["state_writes"] != "ok"
        assert answer.json()["checks"]["queue"] == "ok"  # reads still work: it *looked* fine
        assert_no_paths(answer, state_dir)
    finally:
        restore(serve)

    # Space is back: the next delivery is stored, and readiness follows.
    assert deliver(serve, 3).status_code == 200
    assert readyz(serve).status_code == 200
    assert serve.alive()


def test_readyz_probe_alone_notices_a_full_disk(serve: ServeProcess, tmp_path: Path) -> None:
    """No delivery has failed yet: the probe write finds it, and recovers with the disk."""
    assert readyz(serve).status_code == 200
    disk_full(serve)
    try:
        answer = readyz(serve)
        assert answer.status_code == 503, answer.text
        assert "EFBIG" in answer.json()["checks"]["state_writes"]
        assert_no_paths(answer, tmp_path / "state")
    finally:
        restore(serve)
    assert readyz(serve).status_code == 200


def test_queue_errors_answer_without_naming_files(app_client_factory: Any) -> None:
    """The queue's own error names its database file; the unauthenticated answers (503 to the
    sender, /readyz) give the reason without it. In-process: the database is replaced by a
    directory, so every open fails (as in tests/intake/test_app.py)."""
    app = app_client_factory()
    database = app.queue.db_path
    app.queue.close()
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    database.mkdir()
    try:
        body = json.dumps({"entity": "model_version_alias", "action": "created",
                           "data": {"name": "fraud", "alias": "staging",
                                    "version": "1"}}).encode()
        delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
        refused = app.post("/webhooks/mlflow", body, {
            "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": sign_mlflow(CAPTURE_SECRET, delivery, stamp, body)})
        assert refused.status_code == 503, refused.text
        answer = app.get("/readyz")
        assert answer.status_code == 503
        for response in (refused, answer):
            assert_no_paths(response, database.parent)
    finally:
        shutil.rmtree(database)


def test_readyz_probe_makes_a_missing_state_directory(tmp_path: Path) -> None:
    """With the PostgreSQL backend no SQLite file makes the state directory: the probe must
    make it (owner-only), not fail on it for ever."""
    state_dir = tmp_path / "volume" / "state"
    WriteHealth(state_dir, SystemClock()).check()
    assert state_dir.is_dir() and state_dir.stat().st_mode & 0o777 == 0o700
    assert list(state_dir.iterdir()) == []   # the probe file is gone again
