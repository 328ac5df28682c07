"""`promoter demo --reset`: a user starts over without knowing where the demo keeps its state;
nothing is removed without a confirmation (or --yes)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


def demo(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTER_", "MLFLOW_"))}
    env.update(PROMOTER_STATE_DIR=str(state), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "promoter", "demo", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60,
                          stdin=subprocess.DEVNULL)


def a_demo_directory(state: Path) -> Path:
    directory = state / "demo"
    (directory / "registry-data").mkdir(parents=True)
    (directory / "promoter.yaml").write_text("# written by promoter demo\n")
    (directory / "registry-data" / "blob").write_bytes(b"layer")
    return directory


def test_reset_without_a_terminal_asks_for_yes_and_removes_nothing(tmp_path: Path) -> None:
    directory = a_demo_directory(tmp_path / "state")
    done = demo(tmp_path / "state", "--reset")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--yes" in done.stderr and str(directory) in done.stderr
    assert (directory / "registry-data" / "blob").exists()


def test_reset_yes_removes_the_demo_and_only_the_demo(tmp_path: Path) -> None:
    directory = a_demo_directory(tmp_path / "state")
    elsewhere = tmp_path / "state" / "keep.db"
    elsewhere.write_bytes(b"not the demo's")
    done = demo(tmp_path / "state", "--reset", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removed {directory}" in done.stdout
    assert not directory.exists() and elsewhere.exists()
    again = demo(tmp_path / "state", "--reset", "--yes")
    assert again.returncode == 0 and "nothing to reset" in again.stdout


def test_stop_and_reset_together_is_a_usage_error(tmp_path: Path) -> None:
    done = demo(tmp_path / "state", "--stop", "--reset")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--reset also stops" in done.stderr


def _answer_on_a_terminal(state: Path, answer: bytes) -> tuple[int, str]:
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTER_", "MLFLOW_"))}
    env.update(PROMOTER_STATE_DIR=str(state), PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "promoter", "demo", "--reset"],
                               stdin=follower, stdout=follower, stderr=follower, env=env,
                               cwd=ROOT)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 60
    while b"?" not in shown and time.monotonic() < deadline:  # the question
        if select.select([leader], [], [], 1)[0]:
            try:
                shown += os.read(leader, 4096)
            except OSError:  # the child ended without asking
                break
    os.write(leader, answer)
    with contextlib.suppress(OSError):  # EIO once the child closed the terminal
        while chunk := os.read(leader, 4096):
            shown += chunk
    os.close(leader)
    return process.wait(timeout=60), shown.decode(errors="replace")


def test_reset_asks_on_a_terminal_and_no_keeps_everything(tmp_path: Path) -> None:
    directory = a_demo_directory(tmp_path / "state")
    code, shown = _answer_on_a_terminal(tmp_path / "state", b"n\n")
    assert code == 130, shown
    assert f"remove {directory}" in shown and directory.exists()
    code, shown = _answer_on_a_terminal(tmp_path / "state", b"y\n")
    assert code == 0, shown
    assert not directory.exists()
