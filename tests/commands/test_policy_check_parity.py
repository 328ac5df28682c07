"""`promoter policy check` gives the pipeline's answer for every check the pipeline makes
beside the policy verdict (core.deployable): each case is judged by `policy check` and by
`promoter promote` on one promoter.yaml, against the real MLflow server, the local git
provider's real repository and the state database, and both refuse with the same message
(exit 1, status ``invalid``), where `policy check` used to say "allowed"."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import (
    mlflow_client,
    register_model_version,
    version_tags,
    write_config,
)

pytestmark = pytest.mark.e2e
Run = Callable[..., tuple[int, str, str]]
ENV = "staging"


def judged_alike(run_cli: Run, config: Path, mlflow_url: str, model: str,
                 version: str) -> str:
    """The message both refuse ``model`` ``version`` with in staging: `policy check` first
    (it must leave nothing behind that changes the pipeline's answer), then the pipeline."""
    code, out, err = run_cli("--config", str(config), "policy", "check", "--model", model,
                             "--version", version, "--env", ENV)
    assert code == 1, out + err
    mlflow_client(mlflow_url).set_registered_model_alias(model, ENV, version)
    code, out, err = run_cli("--config", str(config), "promote", model, "--version", version,
                             "--env", ENV)
    assert code != 0, out + err
    tags = version_tags(mlflow_url, model, version)
    assert tags[f"promoter.{ENV}.status"] == "invalid"
    reason = tags[f"promoter.{ENV}.reason"]
    checked = run_cli("--config", str(config), "policy", "check", "--model", model,
                      "--version", version, "--env", ENV)
    assert checked[0] == 1
    assert _words(reason) in _words(checked[2]), (reason, checked[2])
    return reason


def _words(text: str) -> str:
    """The text as words: the CLI wraps an error's lines to the terminal."""
    return " ".join(re.sub(r"^\s*(error|hint):\s*", "", text, flags=re.M).split())


def merge_promotion(run_cli: Run, config: Path, mlflow_url: str, model: str, version: str,
                    env: str) -> None:
    """``model`` ``version`` promoted to ``env`` by the pipeline and its MR merged: the target
    branch then holds its base and overlay, as after a reviewed promotion."""
    mlflow_client(mlflow_url).set_registered_model_alias(model, env, version)
    code, out, err = run_cli("--config", str(config), "promote", model, "--version", version,
                             "--env", env, "--output", "json")
    assert code == 0, out + err
    iid = json.loads(out)["result"]["mr_iid"]
    code, out, err = run_cli("--config", str(config), "mr", "merge", str(iid), "--user", "alice")
    assert code == 0, out + err


def stack(tmp_path: Path, mlflow: MlflowServer, **extra: Any) -> Path:
    return write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                        mlflow_url=mlflow.url, approvals=0, extra=extra or None)


def test_a_deployment_name_another_model_owns(run_cli: Run, mlflow_server: MlflowServer,
                                              tmp_path: Path) -> None:
    config = stack(tmp_path, mlflow_server)
    first = register_model_version(mlflow_server.url, "parity-owner",
                                   tags={"deploy.name": "parity-shared"})
    merge_promotion(run_cli, config, mlflow_server.url, "parity-owner", first, "production")
    second = register_model_version(mlflow_server.url, "parity-intruder",
                                    tags={"deploy.name": "parity-shared"})
    reason = judged_alike(run_cli, config, mlflow_server.url, "parity-intruder", second)
    assert "both become deployment 'parity-shared'" in reason


def test_a_runtime_switch_under_another_environment(run_cli: Run, mlflow_server: MlflowServer,
                                                    tmp_path: Path) -> None:
    config = stack(tmp_path, mlflow_server)
    model = "parity-switch"
    first = register_model_version(mlflow_server.url, model)
    merge_promotion(run_cli, config, mlflow_server.url, model, first, "production")
    switched = register_model_version(mlflow_server.url, model, tags={"deploy.runtime": "kserve"})
    reason = judged_alike(run_cli, config, mlflow_server.url, model, switched)
    assert "runs runtime 'deployment' in production" in reason


def test_a_vllm_intent_the_model_cannot_start_with(run_cli: Run, mlflow_server: MlflowServer,
                                                   tmp_path: Path) -> None:
    from tests.pipeline.test_vllm_fit_e2e import MODEL, register_llm

    config = stack(tmp_path, mlflow_server)
    misfit = register_llm(mlflow_server.url, tmp_path / "llm", {
        "deploy.resources.gpu.count": "3", "deploy.serving.maxModelLen": "128"})
    reason = judged_alike(run_cli, config, mlflow_server.url, MODEL, misfit)
    assert "2 attention heads" in reason and "longer than the model's 64 tokens" in reason


def test_a_pyfunc_image_without_a_base(run_cli: Run, mlflow_server: MlflowServer,
                                       tmp_path: Path) -> None:
    config = stack(tmp_path, mlflow_server, image={
        "repository": "registry.invalid/models/{name}", "demo": False})
    version = register_model_version(mlflow_server.url, "parity-baseless")
    reason = judged_alike(run_cli, config, mlflow_server.url, "parity-baseless", version)
    assert "without image.base that image has no Python and cannot start" in reason
