"""Fixtures shared by every test package."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from promoter import cli
from tests.fixtures.mlflow_server import mlflow_server  # noqa: F401  (one server per session)
from tests.fixtures.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.fixtures.state_backends import state_backend  # noqa: F401  (both backends)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

requires_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None and shutil.which("kustomize") is None,
    reason="kubectl (with kustomize v5) is not installed; `make install-system` cannot provide it "
           "on this machine, so the real-Kustomize checks are skipped")


def cli_runner(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`promoter ARGS` in-process; the runner returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> Callable[..., tuple[int, str, str]]:
    """Run `promoter ARGS` in-process with a private state directory."""
    monkeypatch.setenv("PROMOTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PROMOTER_CONFIG", raising=False)
    return cli_runner(capsys)
