"""A model's requirements.txt comes from its owner: only plain requirements reach pip, pip runs
without the service's secrets, and what pip says comes back short and redacted."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import pytest

from promoter.adapters.pip import PipInstaller, pip_environment
from promoter.errors import UserError
from promoter.image.dependencies import dependency_layer, requirement_lines
from promoter.image.platform import parse_platform

FAKE_TOKEN = "glpat-fake-token-for-tests-0123"


def _model(tmp_path: Path, requirements: str) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "requirements.txt").write_text(requirements, encoding="utf-8")
    return model_dir


@pytest.mark.parametrize(("requirements", "line", "shown"), [
    ("--no-binary :all:\nevil\n", 1, "--no-binary :all:"),
    ("numpy\n-r /proc/self/environ\n", 2, "-r /proc/self/environ"),
    ("-c /etc/passwd\n", 1, "-c /etc/passwd"),
    ("  --index-url https://evil.example/simple\n", 1, "--index-url"),
    ("--extra-index-url https://evil.example/simple\n", 1, "--extra-index-url"),
    ("--find-links /tmp\n", 1, "--find-links"),
    ("--trusted-host evil.example\n", 1, "--trusted-host"),
    ("--pre\n", 1, "--pre"),
    ("-e .\n", 1, "-e ."),
    ("evil @ https://evil.example/evil-1.0.tar.gz\n", 1, "evil @ https"),
    ("evil @ file:///tmp/evil\n", 1, "evil @ file"),
    ("https://evil.example/evil-1.0-py3-none-any.whl\n", 1, "https://evil.example"),
    ("./evil\n", 1, "./evil"),
    ("/tmp/evil\n", 1, "/tmp/evil"),
    ("evil-1.0.tar.gz\n", 1, "evil-1.0.tar.gz"),
    ("evil-1.0-py3-none-any.whl\n", 1, "evil-1.0-py3-none-any.whl"),
    # pip joins a line ending in a backslash with the next one: an option smuggled in.
    ("numpy \\\n--no-binary :all:\n", 1, "numpy \\\\"),
    ("numpy==${PROMOTER_GITLAB_TOKEN}\n", 1, "${PROMOTER_GITLAB_TOKEN}"),
    ("this is not (a requirement\n", 1, "this is not"),
])
def test_anything_but_a_plain_requirement_is_refused_with_its_line(
        tmp_path: Path, requirements: str, line: int, shown: str) -> None:
    with pytest.raises(UserError) as refused:
        requirement_lines(_model(tmp_path, requirements))
    message = str(refused.value)
    assert f"requirements.txt line {line} " in message and shown in message, message
    assert "pip options (-r, --index-url" in message  # and what is allowed instead


def test_a_long_refused_line_is_shown_truncated(tmp_path: Path) -> None:
    with pytest.raises(UserError) as refused:
        requirement_lines(_model(tmp_path, "--find-links " + "x" * 500 + "\n"))
    assert "x" * 100 not in str(refused.value) and "…" in str(refused.value)


def test_plain_requirements_with_extras_markers_and_versions_pass(tmp_path: Path) -> None:
    model_dir = _model(tmp_path, "# pinned by mlflow\n\nnumpy >= 1.26, <3  # comment\n"
                                 "mlflow[extras]==2.9.2\n"
                                 "tomli; python_version < \"3.11\"\n")
    assert requirement_lines(model_dir) == [
        "numpy<3,>=1.26", "mlflow[extras]==2.9.2", 'tomli; python_version < "3.11"']


def _evil_sdist(directory: Path, marker: Path) -> None:
    """An sdist whose in-tree build backend (needing nothing from an index) leaves ``marker``
    with what it found in its environment, the moment pip asks it anything."""
    backend = (f"import os\nopen({str(marker)!r}, 'w').write(os.environ.get("
               f"'PROMOTER_GITLAB_TOKEN', 'no token'))\n")
    pyproject = ('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                 'backend-path = ["."]\n')
    pkg_info = "Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n"
    with tarfile.open(directory / "evil-0.1.tar.gz", "w:gz") as archive:
        for name, text in (("backend.py", backend), ("pyproject.toml", pyproject),
                           ("PKG-INFO", pkg_info)):
            data = text.encode()
            info = tarfile.TarInfo(f"evil-0.1/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.mark.e2e
def test_a_model_cannot_turn_source_builds_back_on(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_GITLAB_TOKEN", FAKE_TOKEN)
    links, marker = tmp_path / "links", tmp_path / "backend-ran"
    links.mkdir()
    _evil_sdist(links, marker)
    model_dir = _model(tmp_path, f"--no-binary :all:\n--no-index\n--find-links {links}\nevil\n")
    with pytest.raises(UserError) as refused:
        dependency_layer(model_dir, tmp_path / "cache", PipInstaller(),
                         platform=parse_platform("linux/amd64"), python_version="3.11",
                         pip_options=())
    assert not marker.exists(), "the model's build backend ran on the builder"
    assert "line 1 is a pip option: '--no-binary :all:'" in str(refused.value)


def _pip_fails_on(tmp_path: Path, requirements_text: str, installer: PipInstaller) -> str:
    """Run the real pip on a requirements file written as is (as the adapter receives it)."""
    work = tmp_path / "work"
    work.mkdir()
    requirements = work / "requirements.txt"
    requirements.write_text(requirements_text, encoding="utf-8")
    with pytest.raises(UserError) as failed:
        installer.install(requirements, work / "target", platforms=["manylinux_2_17_x86_64"],
                          python_version="3.11", options=["--no-index"])
    return str(failed.value)


def test_the_environment_pip_gets_is_an_allowlist() -> None:
    environ = {"PATH": "/usr/bin", "HOME": "/home/promoter", "HTTPS_PROXY": "http://proxy:3128",
               "PIP_INDEX_URL": "https://pypi.internal/simple", "SSL_CERT_FILE": "/ca.pem",
               "PROMOTER_GITLAB_TOKEN": FAKE_TOKEN, "COSIGN_PASSWORD": "cosign-pass",
               "PROMOTER_STATE_PASSWORD": "db-pass", "PYTHONPATH": "/srv/app",
               "AWS_SECRET_ACCESS_KEY": "aws", "PIP_NO_BINARY": ":all:"}
    assert pip_environment(environ) == {
        "PATH": "/usr/bin", "HOME": "/home/promoter", "HTTPS_PROXY": "http://proxy:3128",
        "PIP_INDEX_URL": "https://pypi.internal/simple", "SSL_CERT_FILE": "/ca.pem"}


@pytest.mark.e2e
def test_pip_runs_without_the_services_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PROMOTER_GITLAB_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("COSIGN_PASSWORD", "cosign-password-for-tests")
    monkeypatch.setenv("PIP_TRUSTED_HOST", "allowed.example")
    caplog.set_level(logging.WARNING, logger="promoter.adapters.pip")
    # pip quotes the file it cannot parse: here its own environment, as the audit showed.
    error = _pip_fails_on(tmp_path, "-r /proc/self/environ\n", PipInstaller())
    logged = caplog.text
    assert "PIP_TRUSTED_HOST=allowed.example" in logged  # pip did print its environment
    for secret in (FAKE_TOKEN, "cosign-password-for-tests"):
        assert secret not in logged and secret not in error


@pytest.mark.e2e
def test_pip_failure_reason_is_its_last_error_short_and_redacted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="promoter.adapters.pip")
    missing = f"/nonexistent/{FAKE_TOKEN}/https://user:hunter2@index.example/{'x' * 600}"
    error = _pip_fails_on(tmp_path, f"-r {missing}\n", PipInstaller([FAKE_TOKEN]))
    reason = error.split("\n", 1)[0]
    assert reason.startswith("installing the model's requirements for the image failed: "
                             "ERROR: "), reason
    assert "***" in reason and len(reason) < 400
    assert "pip's full output is in the log" in error
    logged = caplog.text
    assert "://***@index.example" in logged and "x" * 600 in logged
    for text in (error, logged):
        assert FAKE_TOKEN not in text and "hunter2" not in text
