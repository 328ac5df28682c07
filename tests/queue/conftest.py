"""Fixtures for the job queue tests: real state databases (SQLite files in tmp dirs and
PostgreSQL databases, see ``state_backend``), a clock tests can move."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.service.queue import JobQueue
from tests.fixtures.state_backends import StateBackend

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
def queue(state_backend: StateBackend, clock: ManualClock) -> Iterator[JobQueue]:
    q = state_backend.queue(clock)
    yield q
    q.close()


def start_worker_process(backend: StateBackend, mode: str, log: Path,
                         *extra: str) -> subprocess.Popen[str]:
    """Run tests/queue/worker_process.py as a separate OS process on ``backend``'s store."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), *backend.process_args(), "--mode", mode,
         "--log", str(log), *extra],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def log_lines(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]
