"""The layering the README's Architecture section describes, checked by import-linter: a pure
core, one composition root that alone imports adapters, image/signing below adapters."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_import_linter_contracts_hold() -> None:
    command = shutil.which("lint-imports")
    if command is None:
        pytest.fail("import-linter is a test dependency: pip install -e '.[test]'")
    result = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys; from promoter import cli; "
            "print(sorted(m for m in ('mlflow', 'gitlab', 'sklearn', 'jinja2', 'httpx') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
