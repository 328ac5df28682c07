"""A vLLM promotion the model cannot start with is an invalid intent before anything is built or
proposed: a tiny Hugging Face model in MLflow's transformers layout (model/ + components/ +
MLmodel; 2 attention heads, 64 positions) logged to the real MLflow server, `promoter promote`
reading its config.json through the real registry adapter. A fitting intent still goes through
to a merge request with the signed modelcar."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import (
    DEPLOY_TAGS,
    CosignKeys,
    mlflow_client,
    version_tags,
    write_config,
)
from tests.image.modelcar_models import HF_CONFIG, save_hf_directory, save_transformers_flavor

pytestmark = pytest.mark.e2e
Cli = Callable[..., tuple[int, str, str]]
MODEL = "tiny-chat"



def register_llm(tracking_uri: str, work: Path, tags: dict[str, str]) -> str:
    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name("vllm-fit-e2e")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("vllm-fit-e2e"))
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(save_transformers_flavor(work / "llm")), "model")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(filter_string=f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    version = client.create_model_version(
        MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
        tags={**DEPLOY_TAGS, "deploy.runtime": "vllm", "deploy.serving.platform": "kubernetes",
              **tags})
    return str(version.version)


def test_a_gpu_count_the_heads_do_not_divide_is_invalid_and_opens_no_mr(
        mlflow_server: MlflowServer, stack_registry: str, cosign_keys: CosignKeys,
        tmp_path: Path, promoter: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert HF_CONFIG["num_attention_heads"] == 2 and HF_CONFIG["max_position_embeddings"] == 64
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=mlflow_server.url, registry=stack_registry,
                          keys=cosign_keys)
    monkeypatch.setenv("COSIGN_PASSWORD", cosign_keys.password)
    client = mlflow_client(mlflow_server.url)

    misfit = register_llm(mlflow_server.url, tmp_path / "a", {
        "deploy.resources.gpu.count": "3", "deploy.serving.maxModelLen": "128"})
    client.set_registered_model_alias(MODEL, "staging", misfit)
    code, out, err = promoter("--config", str(config), "promote", MODEL, "--version", misfit,
                              "--env", "staging")
    assert code != 0, out + err
    tags = version_tags(mlflow_server.url, MODEL, misfit)
    assert tags["promoter.staging.status"] == "invalid"
    reason = tags["promoter.staging.reason"]
    assert "spec.resources.gpu.count: 3 GPUs" in reason and "2 attention heads" in reason
    assert "spec.serving.maxModelLen: 128 is longer than the model's 64 tokens" in reason
    assert "promoter.staging.image" not in tags and "promoter.staging.mr_url" not in tags
    assert "spec.resources.gpu.count" in out + err

    fitting = register_llm(mlflow_server.url, tmp_path / "b", {
        "deploy.resources.gpu.count": "2", "deploy.serving.maxModelLen": "64"})
    client.set_registered_model_alias(MODEL, "staging", fitting)
    code, out, err = promoter("--config", str(config), "promote", MODEL, "--version", fitting,
                              "--env", "staging")
    assert code == 0, out + err
    assert "done: created" in out, out
    tags = version_tags(mlflow_server.url, MODEL, fitting)
    assert tags["promoter.staging.status"] == "mr_opened"
    assert tags["promoter.staging.image"].startswith(f"{stack_registry}/models/{MODEL}@sha256:")


def _variant(work: Path, name: str) -> Path:
    """The tiny model in one of the shapes a version's files may take."""
    if name == "transformers-flavor":
        return save_transformers_flavor(work)
    model = save_hf_directory(work)
    if name == "too-large":   # past the 1 MiB read limit: not read at all
        config = {**HF_CONFIG, "id2label": {str(i): "x" * 64 for i in range(20_000)}}
        (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    elif name == "not-json":
        (model / "config.json").write_text("{'num_attention_heads': 2", encoding="utf-8")
    elif name == "climbing-flavor":   # the modelcar does not follow `..` out of the model
        (model / "MLmodel").write_text("flavors:\n  transformers:\n    model_binary: ../x\n",
                                       encoding="utf-8")
    return model


@pytest.mark.parametrize(("variant", "read"), [
    ("hf-directory", True), ("transformers-flavor", True), ("too-large", False),
    ("not-json", False), ("climbing-flavor", False)])
def test_the_registry_adapter_reads_config_json_where_the_modelcar_takes_it(
        mlflow_server: MlflowServer, tmp_path: Path, variant: str, read: bool) -> None:
    from promoter.adapters.mlflow.registry import MlflowRegistry

    client = mlflow_client(mlflow_server.url)
    name = f"hf-files-{variant}"
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.log_artifacts(run.info.run_id, str(_variant(tmp_path / "m", variant)), "model")
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                          run_id=run.info.run_id).version
    files = MlflowRegistry(mlflow_server.url).huggingface_files(name, str(version))
    assert files.config == (HF_CONFIG if read else None)
    if read:
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= files.names
