"""`promoter render MODEL --version N` against a real mlflow server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.mlflow_server import MlflowServer

Run = Callable[..., tuple[int, str, str]]
pytestmark = pytest.mark.e2e


def test_intent_from_deploy_tags_and_lineage_from_the_version(
        run_cli: Run, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    client = mlflow_server.client()
    name = "Render From Tags"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment("render-from-tags"))
    version = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id, tags={
        "deploy.owner.team": "search", "deploy.owner.costCenter": "cc-9",
        "deploy.runtime": "kserve", "deploy.resources.gpu.count": "2",
        "deploy.resources.gpu.type": "NVIDIA-L40S", "deploy.description": "{{ 7*7 }} &x",
    })
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    code, out, err = run_cli("render", name, "--version", version.version, "--env", "production",
                             "--dry-run")
    assert code == 0, err
    assert "--- # render-from-tags/overlays/production/patch-inferenceservice.yaml" in out
    assert 'nvidia.com/gpu: "2"' in out
    assert f"promoter.dev/mlflow-run-id: \"{run.info.run_id}\"" in out or \
        f"promoter.dev/mlflow-run-id: {run.info.run_id}" in out
    assert '"{{ 7*7 }} &x"' in out

    client.set_model_version_tag(name, version.version, "deploy.resources.gpu.count", "-3")
    code, _, err = run_cli("render", name, "--version", version.version, "--env", "production",
                           "--dry-run")
    assert code == 1 and "spec.resources.gpu.count" in err
