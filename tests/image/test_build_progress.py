"""Progress of `promoter image build`: the dependency install and the upload are shown on a
terminal, and nothing but the result is printed off one."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promoter.image.builder import BuildProgress
from promoter.service import composition
from promoter.settings import load_settings
from tests.conftest import ROOT
from tests.image.model import save_model

pytestmark = pytest.mark.e2e


def _environ(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTER_", "MLFLOW_"))}
    return {**env, "PROMOTER_STATE_DIR": str(state), "PYTHONPATH": str(ROOT),
            "COLUMNS": "120", "TERM": "xterm"}


def _on_a_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdout=follower, stderr=follower,
                               stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_a_terminal_sees_the_dependency_install_and_a_pipe_sees_only_the_result(
        registry: str, tmp_path: Path) -> None:
    model = save_model(tmp_path / "model", seed=7)
    command = [sys.executable, "-m", "promoter", "image", "build", str(model),
               "--repository", f"{registry}/models/progress"]
    code, shown = _on_a_terminal(command, _environ(tmp_path / "state-tty"))
    assert code == 0, shown
    assert "installing 1 requirements for python" in shown, shown
    assert re.search(r"building the image for .+: \d+\.\d s", shown), shown

    piped = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300,
                           env=_environ(tmp_path / "state-pipe"), cwd=ROOT)
    assert piped.returncode == 0, piped.stderr
    assert re.fullmatch(rf"{re.escape(registry)}/models/progress@sha256:[0-9a-f]{{64}}\n",
                        piped.stdout), piped.stdout


def test_the_upload_reports_bytes_until_all_are_sent(registry: str, tmp_path: Path) -> None:
    statuses: list[str] = []
    moved: list[tuple[str, int, int]] = []
    settings = load_settings(None, environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    built = composition.build_image(
        settings, str(save_model(tmp_path / "model", seed=8)), f"{registry}/models/bytes",
        progress=BuildProgress(statuses.append, lambda *args: moved.append(args)))
    assert any(text.startswith("installing 1 requirements") for text in statuses), statuses
    assert moved, "no upload progress"
    totals = {total for _, _, total in moved}
    assert len(totals) == 1, totals
    total = totals.pop()
    assert 0 < built.size - total < 4096  # every blob counted; the manifest is not a blob
    done = [sent for _, sent, _ in moved]
    assert done == sorted(done) and done[0] == 0
    assert done[-1] == total  # every byte of every blob accounted for
