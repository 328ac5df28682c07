"""Fixtures for the job queue tests: real SQLite files in tmp dirs, a clock tests can move."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.service.queue import JobQueue

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")


class ManualClock:
    """A clock that moves only when told to, so backoff and leases need no sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def queue(tmp_path: Path, clock: ManualClock) -> Iterator[JobQueue]:
    q = JobQueue.open(tmp_path / "state", clock=clock)
    yield q
    q.close()


def start_worker_process(state_dir: Path, mode: str, log: Path,
                         *extra: str) -> subprocess.Popen[str]:
    """Run tests/queue/worker_process.py as a separate OS process."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), "--state-dir", str(state_dir), "--mode", mode,
         "--log", str(log), *extra],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def log_lines(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]
