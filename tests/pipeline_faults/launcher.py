"""Runners forked from one warm process: each is a real process the test may SIGKILL, but
none pays the ~4 s of importing promoter and MLflow again (two starts per crash case)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.fixtures.stack import promoter_environ

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("crash_runner.py")


class Forked:
    """A runner forked by the Launcher: its own process (kill it like any other)."""

    def __init__(self, launcher: Launcher, pid: int) -> None:
        self.launcher = launcher
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float) -> int:
        if self.returncode is None:
            answer = self.launcher.answer(timeout)
            if answer is None:
                raise subprocess.TimeoutExpired(f"runner {self.pid}", timeout)
            assert answer["pid"] == self.pid, answer
            self.returncode = int(answer["returncode"])
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class Launcher:
    """One `crash_runner.py --serve-forks` process for the session: it imports promoter and
    MLflow once and forks each runner, so the matrix does not pay ~4 s of imports per start."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RUNNER), "--serve-forks"], cwd=ROOT,
            env=promoter_environ(PYTHONPATH=str(ROOT)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        self._pending = b""

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Forked:
        assert self.process.stdin is not None
        request = {"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        answer = self.answer(60)
        assert answer is not None and "returncode" not in answer, answer
        return Forked(self, int(answer["pid"]))

    def answer(self, timeout: float) -> dict[str, Any] | None:
        """The launcher's next answer line, or None after ``timeout`` seconds."""
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([descriptor], [], [], left)[0]:
                return None
            chunk = os.read(descriptor, 65536)
            if not chunk:
                raise RuntimeError("the runner launcher exited")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
