"""Modelcar layout planning (promoter/image/modelcar.py), without a registry: where files go,
and the models a runtime cannot serve refused with a reason before anything is pushed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from promoter.errors import UserError
from promoter.image.layers import measure_tar
from promoter.image.modelcar import plan
from promoter.ports.image import ModelcarRequest
from tests.image.modelcar_models import (
    layout_of,
    save_hf_directory,
    save_onnx_model,
    save_transformers_flavor,
)


def names(model: Path, runtime: str, version: str = "1", **options: object) -> list[str]:
    request = ModelcarRequest(layout=layout_of(runtime), name="m", **options)  # type: ignore[arg-type]
    return [entry.arcname for entry in plan(model, version, request)]


def test_the_same_files_in_either_vllm_source_give_the_same_layer(tmp_path: Path) -> None:
    plain = plan(save_hf_directory(tmp_path / "hf"), "1", ModelcarRequest("huggingface", "m"))
    flavor = plan(save_transformers_flavor(tmp_path / "mlflow"), "1",
                  ModelcarRequest("huggingface", "m"))
    assert [e.arcname for e in plain] == [e.arcname for e in flavor]
    assert measure_tar(plain, "").diff_id == measure_tar(flavor, "").diff_id


def test_vllm_refuses_a_model_without_safetensors_weights(tmp_path: Path) -> None:
    model = save_hf_directory(tmp_path / "hf")
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"config\.json and \*\.safetensors"):
        names(model, "vllm")


def test_vllm_refuses_a_file_in_two_flavor_directories(tmp_path: Path) -> None:
    model = save_transformers_flavor(tmp_path / "mlflow")
    shutil.copy(model / "model" / "config.json", model / "components/tokenizer/config.json")
    with pytest.raises(UserError, match=r"config\.json is in more than one"):
        names(model, "vllm")


def test_triton_places_the_version_directory_and_needs_a_signature(tmp_path: Path) -> None:
    model = save_onnx_model(tmp_path / "onnx")
    placed = names(model, "triton", "7")
    assert placed[:4] == ["models", "models/m", "models/m/7", "models/m/7/"
                          + sorted(p.name for p in model.glob("*.data"))[0]]
    assert "models/m/config.pbtxt" in placed and "models/m/7/model.onnx" in placed
    assert not any(name.endswith(("MLmodel", "conda.yaml", "requirements.txt"))
                   for name in placed)
    with pytest.raises(UserError, match="positive integer model version"):
        names(model, "triton", "latest")
    with pytest.raises(UserError, match=r"no model\.plan"):
        names(model, "triton", model_format="tensorrt")
    text = (model / "MLmodel").read_text()
    (model / "MLmodel").write_text(text[:text.index("signature:")])
    with pytest.raises(UserError, match="signature does not list them"):
        names(model, "triton")


def test_kserve_needs_an_mlflow_model_and_unknown_runtimes_have_no_layout(
        tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no MLmodel file"):
        names(save_hf_directory(tmp_path / "hf"), "kserve")
    with pytest.raises(UserError, match="no modelcar layout"):
        names(tmp_path, "torchserve")


def test_the_layer_size_is_known_before_reading_and_matches_the_stream(tmp_path: Path) -> None:
    from promoter.image.modelcar import layer_blob
    from promoter.image.tarstream import tar_chunks

    for runtime, model in (("vllm", save_hf_directory(tmp_path / "hf")),
                           ("triton", save_onnx_model(tmp_path / "onnx"))):
        entries = plan(model, "1", ModelcarRequest(layout_of(runtime), "m"))
        assert layer_blob(entries).size == len(b"".join(tar_chunks(entries))), runtime


def test_directories_named_in_mlmodel_cannot_reach_outside_the_model(tmp_path: Path) -> None:
    outside = tmp_path / "secrets"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "config.json").write_text("{}")
    (outside / "model" / "stolen.safetensors").write_text("x")
    model = save_transformers_flavor(tmp_path / "mlflow")
    text = (model / "MLmodel").read_text().replace("model_binary: model",
                                                   "model_binary: ../secrets/model")
    (model / "MLmodel").write_text(text)
    # The escaping directory is ignored; what remains (the tokenizer) is no vLLM model.
    with pytest.raises(UserError, match="holds no Hugging Face model"):
        names(model, "vllm")


def test_vllm_refuses_links_that_leave_models_only_once_the_directories_are_merged(
        tmp_path: Path) -> None:
    """``model/d -> e/..`` and ``components/tokenizer/e -> .`` each stay inside their own
    directory, but merged into one /models, ``d`` is ``models/e/..``: the image's root."""
    model = save_transformers_flavor(tmp_path / "mlflow")
    (model / "model" / "d").symlink_to("e/..")
    (model / "components" / "tokenizer" / "e").symlink_to(".")
    with pytest.raises(UserError, match=r"models/d is a symlink to 'e/\.\.': .* outside them"):
        names(model, "vllm")
    (model / "model" / "d").unlink()
    (model / "model" / "d").symlink_to("e/config.json")   # models/e is /models: inside
    assert {"models/d", "models/e"} <= set(names(model, "vllm"))
