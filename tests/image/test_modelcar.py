"""Modelcars built against a real registry and read back by skopeo + umoci, then loaded by what
serves them: the MLflow model with mlflow.pyfunc (kserve), the ONNX model with onnxruntime
(triton's layout and config.pbtxt), the Hugging Face directory by its config, tokenizer and
safetensors weights (vllm)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promoter.core import triton
from promoter.image import modelcar
from promoter.image.modelcar import read_mlmodel
from promoter.ports.image import BuiltImage, ModelcarRequest
from promoter.service.composition.images import build_modelcar
from promoter.settings import Settings
from tests.image.model import SAMPLE, predictions
from tests.image.modelcar_models import (
    HF_CONFIG,
    ONNX_INPUT,
    TOKENIZER_FILES,
    hf_tensors,
    layout_of,
    onnx_expected,
    save_hf_directory,
    save_onnx_model,
    save_transformers_flavor,
)
from tests.image.oracles import skopeo_copy_to_layout, skopeo_inspect, umoci_unpack

pytestmark = pytest.mark.e2e
TAR = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.model_validate({"state_dir": str(tmp_path_factory.mktemp("state"))})


def build(settings: Settings, model: Path, repository: str, runtime: str,
          **options: Any) -> BuiltImage:
    return build_modelcar(settings, str(model), repository,
                          ModelcarRequest(layout=layout_of(runtime), name=options.pop("name", "m"),
                                          **options))


def unpack(reference: str, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    skopeo_copy_to_layout(reference, work / "layout")
    return umoci_unpack(work / "layout", "image", work / "bundle")


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture(scope="module")
def kserve_car(settings: Settings, registry: str, model_dir: Path) -> BuiltImage:
    return build(settings, model_dir, f"{registry}/modelcars/iris", "kserve")


def test_kserve_modelcar_is_the_mlflow_model_under_models_and_pyfunc_loads_it(
        kserve_car: BuiltImage, model_dir: Path, tmp_path: Path) -> None:
    raw = skopeo_inspect(kserve_car.reference, raw=True)
    assert [layer["mediaType"] for layer in raw["layers"]] == [TAR]  # the files, nothing else
    config = skopeo_inspect(kserve_car.reference, config=True)
    assert "Entrypoint" not in config["config"] and "Cmd" not in config["config"]
    assert config["config"]["Labels"]["io.promoter.modelcar.layout"] == "mlflow"
    rootfs = unpack(kserve_car.reference, tmp_path)
    assert tree(rootfs) - {"models"} == {f"models/{path}" for path in tree(model_dir)}
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(str(rootfs / "models"))
    assert [int(x) for x in loaded.predict(SAMPLE)] == predictions(model_dir)


def test_a_rebuild_gives_the_same_digest_uploads_nothing_and_any_repository_agrees(
        kserve_car: BuiltImage, settings: Settings, registry: str, model_dir: Path) -> None:
    assert kserve_car.bytes_uploaded > 0
    again = build(settings, model_dir, f"{registry}/modelcars/iris", "kserve")
    assert (again.digest, again.bytes_uploaded) == (kserve_car.digest, 0)
    elsewhere = build(settings, model_dir, f"{registry}/other/iris", "kserve")
    assert elsewhere.digest == kserve_car.digest


def test_triton_modelcar_is_a_model_repository_onnxruntime_serves(
        settings: Settings, registry: str, tmp_path: Path) -> None:
    model = save_onnx_model(tmp_path / "onnx")
    built = build(settings, model, f"{registry}/modelcars/ranker", "triton", name="tiny-ranker",
                  model_format="onnx", max_batch_size=8)
    rootfs = unpack(built.reference, tmp_path / "read")
    assert {p for p in tree(rootfs / "models") if p.count("/") < 2} == {
        "tiny-ranker", "tiny-ranker/config.pbtxt", "tiny-ranker/1"}
    config = (rootfs / "models/tiny-ranker/config.pbtxt").read_text()
    mlmodel = read_mlmodel(model)
    assert mlmodel is not None
    assert config == triton.config_pbtxt("tiny-ranker", mlmodel["signature"],
                                         model_format="onnx", max_batch_size=8)
    assert 'name: "tiny-ranker"' in config and "max_batch_size: 8" in config
    assert 'name: "x"' in config and "dims: [ 3 ]" in config and "TYPE_FP32" in config
    import onnxruntime

    # model.onnx plus its external data file, read from the version directory.
    session = onnxruntime.InferenceSession(str(rootfs / "models/tiny-ranker/1/model.onnx"),
                                           providers=["CPUExecutionProvider"])
    [output] = session.run(["y"], {"x": ONNX_INPUT})
    np.testing.assert_allclose(output, onnx_expected(), rtol=1e-6)


@pytest.mark.parametrize("source", ["directory", "transformers-flavor"])
def test_vllm_modelcar_holds_the_hugging_face_files_flat_under_models(
        settings: Settings, registry: str, tmp_path: Path, source: str) -> None:
    from safetensors.numpy import load_file

    model = (save_hf_directory(tmp_path / "hf") if source == "directory"
             else save_transformers_flavor(tmp_path / "mlflow"))
    built = build(settings, model, f"{registry}/modelcars/llm", "vllm")
    rootfs = unpack(built.reference, tmp_path / "read")
    assert tree(rootfs / "models") == {"config.json", "generation_config.json",
                                       "model.safetensors", *TOKENIZER_FILES}
    assert json.loads((rootfs / "models/config.json").read_text()) == HF_CONFIG
    weights = load_file(str(rootfs / "models/model.safetensors"))
    expected = hf_tensors()
    assert set(weights) == set(expected)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(weights[name], tensor)
    for name, text in TOKENIZER_FILES.items():
        assert (rootfs / "models" / name).read_text() == text


def test_the_cli_builds_the_same_modelcar_and_a_second_run_sends_nothing(
        promoter: Any, settings: Settings, registry: str, tmp_path: Path) -> None:
    model = save_hf_directory(tmp_path / "tiny-llm")
    args = ("image", "modelcar", str(model), "--runtime", "vllm", "--repository",
            f"{registry}/modelcars/{{name}}", "--output", "json")
    code, out, err = promoter(*args)
    assert code == 0, err
    first = json.loads(out)
    assert first["reference"] == f"{registry}/modelcars/tiny-llm@{first['digest']}"
    assert first["tag"] == "modelcar" and first["bytes_uploaded"] > 0
    code, out, err = promoter(*args)
    assert code == 0 and json.loads(out)["bytes_uploaded"] == 0, err
    api = build(settings, model, f"{registry}/modelcars/tiny-llm", "vllm")
    assert api.digest == first["digest"]
    code, out, err = promoter("image", "modelcar", str(model), "--runtime", "torchserve",
                              "--repository", f"{registry}/modelcars/x")
    # A usage error: the runtime's descriptor (templates/<runtime>/runtime.yaml) names no layout.
    assert code == 2 and "does not run a modelcar (runtimes that do: kserve, triton, vllm)" \
        in out + err


def test_a_changed_file_is_a_new_layer_even_after_a_cached_build(
        settings: Settings, registry: str, tmp_path: Path) -> None:
    model = save_hf_directory(tmp_path / "hf")
    first = build(settings, model, f"{registry}/modelcars/changing", "vllm")
    again = build(settings, model, f"{registry}/modelcars/changing", "vllm")
    assert (again.digest, again.bytes_uploaded) == (first.digest, 0)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    changed = build(settings, model, f"{registry}/modelcars/changing", "vllm")
    assert changed.digest != first.digest and changed.bytes_uploaded > 0
    rootfs = unpack(changed.reference, tmp_path / "read")
    assert json.loads((rootfs / "models/config.json").read_text())["num_hidden_layers"] == 2


def test_a_file_rewritten_with_its_size_and_old_mtime_is_a_new_layer(
        settings: Settings, registry: str, tmp_path: Path) -> None:
    """``cp --preserve=timestamps`` (or ``touch -r``) keeps the size and sets the old mtime;
    the digest recorded by file metadata must not stand for the new bytes (the kernel's
    ctime changes). Before, the old layer was reused and signed as the new files."""
    model = save_hf_directory(tmp_path / "hf")
    weights = model / "config.json"   # a file of the layer, rewritten at the same size
    old = weights.stat()
    time.sleep(modelcar.SETTLED_SECONDS)            # settled: remembered by metadata alone
    first = build(settings, model, f"{registry}/modelcars/same-size", "vllm")
    weights.write_text(weights.read_text().replace('"num_hidden_layers": 1',
                                                   '"num_hidden_layers": 2'))
    assert weights.stat().st_size == old.st_size
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    changed = build(settings, model, f"{registry}/modelcars/same-size", "vllm")
    assert changed.digest != first.digest and changed.bytes_uploaded > 0
    rootfs = unpack(changed.reference, tmp_path / "read")
    assert (rootfs / "models/config.json").read_text() == weights.read_text()


def test_a_digest_recorded_while_the_files_were_fresh_is_checked_before_use(
        registry: str, tmp_path: Path) -> None:
    """Files written just before the build may change again within their timestamp tick
    without their metadata showing it: such a record is trusted only once the files hash to
    it again (a rebuild still sends nothing), and one they no longer match is ignored."""
    settings = Settings.model_validate({"state_dir": str(tmp_path / "state")})
    model = save_hf_directory(tmp_path / "hf")
    first = build(settings, model, f"{registry}/modelcars/fresh", "vllm")
    again = build(settings, model, f"{registry}/modelcars/fresh", "vllm")
    assert (again.digest, again.bytes_uploaded) == (first.digest, 0)
    cache = settings.state_dir / "image-cache" / "modelcar-layers-unsettled"
    records = list(cache.glob("*.json"))
    assert len(records) == 1
    # As if the files had changed within the tick after that record was made:
    records[0].write_text(json.dumps({"digest": "sha256:" + "0" * 64}))
    checked = build(settings, model, f"{registry}/modelcars/fresh", "vllm")
    assert checked.digest == first.digest


def test_a_modelcar_base_goes_under_the_model_files(
        settings: Settings, registry: str, tmp_path: Path, model_dir: Path) -> None:
    # A stand-in base (any image works the same): one layer holding bin/sh.
    base_files = tmp_path / "base"
    (base_files / "bin").mkdir(parents=True)
    (base_files / "bin" / "sh").write_text("#!placeholder\n")
    from promoter.image.layers import measure_tar
    from promoter.image.tarstream import entries_for_tree

    layer = measure_tar(entries_for_tree(base_files / "bin", "bin"), "base")
    from promoter.adapters.oci import RegistryClient
    from promoter.image.config import OCI_MANIFEST, config_blob, image_manifest

    config = config_blob({"architecture": "amd64", "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                          "config": {"Cmd": ["sh"]}})
    manifest = image_manifest(config, [layer])
    with RegistryClient(registry) as client:
        client.push_blob("bases/sh", layer.blob)
        client.push_blob("bases/sh", config)
        digest, _ = client.put_manifest("bases/sh", "1", manifest, OCI_MANIFEST)
    with_base = settings.model_copy(update={"image": settings.image.model_copy(
        update={"modelcar_base": f"{registry}/bases/sh@{digest}"})})
    built = build(with_base, model_dir, f"{registry}/modelcars/iris-with-base", "kserve")
    assert built.layers[0] == layer.blob.digest and len(built.layers) == 2
    assert not any("modelcar_base" in note for note in built.notes)
    rootfs = unpack(built.reference, tmp_path / "read")
    assert (rootfs / "bin/sh").read_text() == "#!placeholder\n"
    assert (rootfs / "models/MLmodel").read_bytes() == (model_dir / "MLmodel").read_bytes()
    config_seen = skopeo_inspect(built.reference, config=True)
    assert config_seen["config"]["Cmd"] == ["sh"]  # the base's own config is kept


@pytest.mark.parametrize(("model", "registered", "repository"), [
    ("models:/growth.ranker/3", "growth.ranker", "r.example/models/growth-ranker"),
    ("models:/Fraud Detector@production", "Fraud Detector", "r.example/models/fraud-detector"),
    ("models:/2024 Ranker/1", "2024 Ranker", "r.example/models/m-2024-ranker"),
])
def test_name_in_a_repository_is_the_deployment_name(model: str, registered: str,
                                                     repository: str) -> None:
    """{name} is the deployment name (core.naming.derive_name), for image builds and
    modelcars alike, not the registered model's raw name."""
    from promoter.commands.image import _default_name
    from promoter.image.service import named_repository

    assert named_repository("r.example/models/{name}", model, registered) == repository
    assert f"r.example/models/{_default_name(model)}" == repository
    assert named_repository("r.example/fixed", model, registered) == "r.example/fixed"


@pytest.mark.parametrize("name", ["../../../etc/cron.d", "/etc/cron.d", "a/b", "Ranker"])
def test_a_name_that_is_not_a_deployment_name_is_a_usage_error(
        promoter: Any, tmp_path: Path, name: str) -> None:
    """--name is Triton's directory under /models: '../../../etc/cron.d' put members at
    models/../../../etc/cron.d/… into the layer, written there when a runtime unpacks it."""
    model = save_onnx_model(tmp_path / "onnx")
    code, out, err = promoter("image", "modelcar", str(model), "--runtime", "triton",
                              "--name", name, "--oci-layout", str(tmp_path / "layout"))
    assert code == 2, out + err
    assert f"--name {name!r} must be lowercase letters, digits and '-'" in out + err
    assert not (tmp_path / "layout").exists()


@pytest.mark.parametrize(("model", "name"), [
    ("models:/Fraud Predictor/3", "fraud-predictor-model"),
    ("models:/ranker-explainer@production", "ranker-explainer-model"),
    ("models:/growth.ranker/3", "growth-ranker"), ("models:/???/1", "model")])
def test_the_default_name_is_always_a_deployment_name(model: str, name: str) -> None:
    """Without --name, a registered name the pipeline's rule turns into a KServe component
    name gets the name the pipeline suggests for it, not a refusal of a --name never given."""
    from promoter.commands.image import _default_name
    from promoter.core.naming import name_problem

    assert _default_name(model) == name and name_problem(name) is None


def test_a_model_named_like_a_kserve_component_builds_under_the_suggested_name(
        promoter: Any, tmp_path: Path) -> None:
    """The directory fraud-predictor: no --name, so none is refused; Triton's directory is
    the suggested name. Given as --name, the name is still refused."""
    model = save_onnx_model(tmp_path / "fraud-predictor")
    code, out, err = promoter("image", "modelcar", str(model), "--runtime", "triton",
                              "--oci-layout", str(tmp_path / "layout"))
    assert code == 0, out + err
    rootfs = umoci_unpack(tmp_path / "layout", "modelcar", tmp_path / "bundle")
    assert (rootfs / "models/fraud-predictor-model/config.pbtxt").is_file()
    code, out, err = promoter("image", "modelcar", str(model), "--runtime", "triton",
                              "--name", "fraud-predictor", "--oci-layout",
                              str(tmp_path / "named"))
    assert code == 2, out + err
    assert "--name 'fraud-predictor' ends in '-predictor'" in out + err
    assert not (tmp_path / "named").exists()


@pytest.mark.parametrize("name", ["../../../etc/cron.d", "/etc/cron.d", ".."])
def test_the_triton_layout_refuses_a_name_that_leaves_models(tmp_path: Path, name: str) -> None:
    """Callers other than the CLI (the API, the pipeline) reach the same layout."""
    from promoter.errors import UserError

    model = save_onnx_model(tmp_path / "onnx")
    with pytest.raises(UserError, match=r"Triton model name .* must be lowercase"):
        modelcar.plan(model, "1", ModelcarRequest(layout="triton", name=name))
