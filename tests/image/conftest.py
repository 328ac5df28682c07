"""Fixtures for image tests: a real registry, a real MLflow model, a shared build cache."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.image.model import save_model
from tests.image.registry import running_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("models") / "iris")


@pytest.fixture(scope="session")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir for the session, so the dependency layer is pip-installed once."""
    return tmp_path_factory.mktemp("state")


def cli_json(state_dir: Path, *args: str) -> dict[str, Any]:
    """Run `promoter ARGS --output json` in-process outside a test function (for fixtures)."""
    from promoter import cli

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROMOTER_STATE_DIR", str(state_dir))
        patch.delenv("PROMOTER_CONFIG", raising=False)
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            cli.main([*args, "--output", "json"])
    assert exit_info.value.code == 0, out.getvalue()
    return dict(json.loads(out.getvalue()))


@pytest.fixture
def promoter(run_cli: Callable[..., tuple[int, str, str]], shared_state: Path,
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.setenv("PROMOTER_STATE_DIR", str(shared_state))
    return run_cli
