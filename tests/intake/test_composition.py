"""The composition root builds the process's one MLflow adapter and applies MLflow's client
settings there; the adapter itself never touches the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from promoter.adapters.mlflow import CLIENT_SETTINGS, MlflowRegistry
from promoter.errors import UserError
from promoter.service import composition
from tests.conftest import ROOT
from tests.fixtures.mlflow_server import free_port
from tests.intake.conftest import make_settings


@pytest.fixture
def clean_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in CLIENT_SETTINGS:
        monkeypatch.delenv(variable, raising=False)


def test_the_adapter_leaves_the_environment_alone(clean_client_settings: None) -> None:
    before = dict(os.environ)
    MlflowRegistry(f"http://127.0.0.1:{free_port()}")
    assert dict(os.environ) == before


def test_one_adapter_per_process_configured_once(clean_client_settings: None,
                                                tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    first = composition.registry(make_settings(tmp_path / "a", MLFLOW_TRACKING_URI=uri))
    # Another command, the webhook admin and the image builder in the same process: same client.
    again = composition.registry(make_settings(tmp_path / "b", MLFLOW_TRACKING_URI=uri))
    hooks = composition.webhooks(make_settings(tmp_path / "c", MLFLOW_TRACKING_URI=uri))
    assert first is again is hooks
    assert {variable: os.environ.get(variable) for variable in CLIENT_SETTINGS} == CLIENT_SETTINGS
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_mlflow_reports_no_usage_telemetry_from_promoter_processes() -> None:
    """MLflow 3 starts a telemetry client when it is imported, unless told not to. It stays
    off by itself under pytest or CI variables, so the check runs in a child without them."""
    code = ("from promoter.service import composition\n"
            "composition.mlflow.apply_client_settings()\n"
            "import mlflow\n"
            "from mlflow.telemetry import get_telemetry_client\n"
            "print(get_telemetry_client() is None)\n")
    quiet = {key: value for key, value in os.environ.items()
             if key not in ("PYTEST_CURRENT_TEST", "CI", "GITLAB_CI", "GITHUB_ACTIONS")
             and not key.startswith("MLFLOW_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=quiet,
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "True", result.stderr[-2000:]


def test_exported_client_settings_win(clean_client_settings: None, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    composition.registry(make_settings(
        tmp_path, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}"))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == CLIENT_SETTINGS[
        "MLFLOW_HTTP_REQUEST_TIMEOUT"]


def test_no_tracking_uri_is_a_clear_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no MLflow tracking URI"):
        composition.registry(make_settings(tmp_path))


def test_describe_never_shows_mlflow_credentials(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI="https://bot:s3cret@mlflow.example")
    assert composition.describe(settings)["mlflow"] == "https://***@mlflow.example"
