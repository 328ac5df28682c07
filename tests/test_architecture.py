"""The layering the README's Architecture section describes, checked by import-linter: a pure
core, one composition root that alone imports adapters, image/signing below adapters, and
adapters the only code that calls other systems."""

from __future__ import annotations

import fnmatch
import re
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


def test_only_adapters_open_urls_with_the_standard_library() -> None:
    """import-linter cannot single out urllib.request (urllib.parse is pure and everywhere),
    so this one is read from the sources: outside adapters/, nothing opens a URL itself."""
    offenders = [
        str(path.relative_to(ROOT)) for path in sorted((ROOT / "promoter").rglob("*.py"))
        if "adapters" not in path.relative_to(ROOT / "promoter").parts
        and any(word in path.read_text(encoding="utf-8")
                for word in ("urllib.request", "urlopen(", "http.client", "http.server"))]
    assert offenders == []


def _layout() -> str:
    """The README's Architecture code block: the module layout."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1]
    return section.split("```", 2)[1]


# The packages whose layout lists each module; the others (commands/, image/, …) are
# described as a whole.
PER_MODULE = ("core", "service", "adapters")


def test_the_readme_layout_names_every_module() -> None:
    """Each module by its file name, a glob of it (``queue*.py``) or its package (``mlflow/``,
    or ``image/`` outside core/, service/ and adapters/): a module added without a line in
    the layout fails here."""
    layout = _layout()
    files = {name.rsplit("/", 1)[-1] for name in re.findall(r"[\w*/]+\.py\b", layout)}
    packages = set(re.findall(r"(\w+)/", layout))
    missing = []
    for path in sorted((ROOT / "promoter").rglob("*.py")):
        relative = path.relative_to(ROOT / "promoter")
        if path.name == "__init__.py" or "__pycache__" in relative.parts:
            continue
        named = (any(fnmatch.fnmatch(path.name, name) for name in files)
                 or any(package in packages for package in relative.parts[:-1]
                        if package not in PER_MODULE))
        if not named:
            missing.append(str(relative))
    assert missing == []
