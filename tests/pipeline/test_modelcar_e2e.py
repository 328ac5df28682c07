"""A Triton promotion end to end: a tiny ONNX model logged to the real MLflow server, `promoter
promote` building the modelcar into the real registry, signing and verifying it, and the
merge request's manifests (built by real Kustomize) mounting exactly the signed digest, which
onnxruntime then serves from the unpacked image."""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML

from tests.conftest import requires_kubectl
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import (
    DEPLOY_TAGS,
    CosignKeys,
    mlflow_client,
    version_tags,
    write_config,
)
from tests.image.modelcar_models import ONNX_INPUT, onnx_expected, save_onnx_model
from tests.image.oracles import skopeo_copy_to_layout, umoci_unpack

pytestmark = pytest.mark.e2e
Cli = Callable[..., tuple[int, str, str]]
MODEL = "modelcar-ranker"
TRITON_TAGS = {"deploy.runtime": "triton", "deploy.serving.modelFormat": "onnx",
               "deploy.serving.maxBatchSize": "8"}



def register_onnx_version(tracking_uri: str, work: Path) -> str:
    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name("modelcar-e2e")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("modelcar-e2e"))
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(save_onnx_model(work / "onnx")), "model")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(filter_string=f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    tags = {**DEPLOY_TAGS, **TRITON_TAGS}
    version = client.create_model_version(MODEL, source=f"{run.info.artifact_uri}/model",
                                          run_id=run.info.run_id, tags=tags)
    return str(version.version)


def kustomize_branch(remote: Path, branch: str, work: Path) -> list[dict[str, Any]]:
    """The MR branch's overlay as real Kustomize builds it (what Argo CD would apply)."""
    archive = work / "tree.tar"
    subprocess.run(["git", "archive", "--output", str(archive), branch, f"manifests/{MODEL}"],
                   cwd=remote, check=True, timeout=30)
    with tarfile.open(archive) as tar:
        tar.extractall(work / "tree", filter="data")
    built = subprocess.run(["kubectl", "kustomize",
                            str(work / "tree/manifests" / MODEL / "overlays/staging")],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in YAML(typ="safe", pure=True).load_all(built) if doc]


@requires_kubectl
def test_triton_promotion_mounts_the_signed_modelcar_that_onnxruntime_serves(
        mlflow_server: MlflowServer, stack_registry: str, cosign_keys: CosignKeys,
        tmp_path: Path, promoter: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    version = register_onnx_version(mlflow_server.url, tmp_path)
    mlflow_client(mlflow_server.url).set_registered_model_alias(MODEL, "staging", version)
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=mlflow_server.url, registry=stack_registry,
                          keys=cosign_keys)
    monkeypatch.setenv("COSIGN_PASSWORD", cosign_keys.password)
    code, out, err = promoter("--config", str(config), "promote", MODEL, "--version", version,
                              "--env", "staging")
    assert code == 0, out + err
    assert "modelcar" in out and "done: created" in out, out
    reference = version_tags(mlflow_server.url, MODEL, version)["promoter.staging.image"]
    assert reference.startswith(f"{stack_registry}/models/{MODEL}@sha256:")

    # What the cluster would run pulls exactly the signed digest: the server image and the
    # modelcar as an image volume, nothing else.
    documents = kustomize_branch(tmp_path / "state" / "gitops.git",
                                 f"promote/{MODEL}/staging", tmp_path)
    [deployment] = [doc for doc in documents if doc["kind"] == "Deployment"]
    volumes = [v["image"]["reference"] for v in deployment["spec"]["template"]["spec"]["volumes"]
               if "image" in v]
    assert volumes == [reference]
    assert deployment["metadata"]["annotations"]["promoter.dev/modelcar"] == reference

    code, out, err = promoter("--config", str(config), "image", "verify", reference, "--key",
                              str(cosign_keys.public))
    assert code == 0, out + err

    skopeo_copy_to_layout(reference, tmp_path / "layout")
    rootfs = umoci_unpack(tmp_path / "layout", "image", tmp_path / "bundle")
    assert 'max_batch_size: 8' in (rootfs / f"models/{MODEL}/config.pbtxt").read_text()
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(rootfs / f"models/{MODEL}/{version}/model.onnx"), providers=["CPUExecutionProvider"])
    [output] = session.run(["y"], {"x": ONNX_INPUT})
    np.testing.assert_allclose(output, onnx_expected(), rtol=1e-6)
