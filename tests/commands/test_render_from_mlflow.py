"""`promoter render MODEL --version N` against a real mlflow server."""

from __future__ import annotations

import json
import os
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


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore finds no credentials anywhere, and says so before any connection is made."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)


def test_an_artifact_store_without_credentials_is_named_not_unexpected(
        run_cli: Run, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch,
        no_aws_credentials: None, tmp_path: Path) -> None:
    """The version's files are in S3 and promoter has no AWS credentials: render, rollback and
    the promotion job say which store and what to check (exit 1), and the job is parked with
    that reason rather than retried as an "unexpected" error."""
    from promoter.service.audit import AuditTrail

    client = mlflow_server.client()
    name = "Files In S3"
    client.create_registered_model(name)
    version, later = (client.create_model_version(name, source="s3://bucket/x", tags={
        "deploy.owner.team": "search", "deploy.owner.costCenter": "cc-9",
        "deploy.runtime": "kserve"}).version for _ in range(2))
    client.set_registered_model_alias(name, "staging", version)  # the job has work to do
    trail = AuditTrail(tmp_path / "state")  # staging ran it, then a later one: a rollback target
    for merged in (version, later):
        trail.record("mr.merge", model=name, env="staging", version=merged, status="merged")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    commands = [("render", name, "--version", version, "--env", "production", "--dry-run"),
                ("rollback", name, "--env", "staging", "--to-version", version),
                ("promote", name, "--version", version, "--env", "staging")]
    for command in commands:
        code, out, err = run_cli(*command)
        assert code == 1, (command, out, err)
        assert "s3://bucket/x" in err and "no usable credentials" in err, (command, err)
        assert "unexpected" not in err, (command, err)
    code, out, _ = run_cli("jobs", "list", "--output", "json")
    assert code == 0 and [job["state"] for job in json.loads(out)] == ["dead"]
