"""Fixtures for the pipeline's end-to-end tests: the shared stack (tests/fixtures/stack.py)
and `promoter` run in-process."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.conftest import cli_runner
from tests.fixtures.stack import cosign_keys, stack_registry  # noqa: F401  (pytest fixtures)


@pytest.fixture
def promoter(capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """`promoter ARGS` in-process, with the process environment a user's shell would have."""
    for variable in [v for v in os.environ if v.startswith(("PROMOTER_", "MLFLOW_"))]:
        monkeypatch.delenv(variable)
    return cli_runner(capsys)
