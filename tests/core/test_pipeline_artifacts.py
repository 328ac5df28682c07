"""The pipeline builds the artifact the runtime's descriptor names, signs it, and pins exactly
that digest in the manifests: the pyfunc image (deployment), a modelcar (kserve, vllm, triton)
or nothing (a runtime whose descriptor says ``artifact: none``). In-memory ports as in
test_pipeline.py; the real registry and builds are in tests/image/test_modelcar*.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from ruamel.yaml import YAML

from promoter import rendering
from promoter.core import live_overlay
from promoter.core.intent import InvalidIntent
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.core.render import Renderer
from promoter.core.spec import API_VERSION, KIND, ModelRef
from promoter.errors import PermanentError
from promoter.ports.image import ModelcarRequest
from promoter.ports.registry import HuggingFaceFiles
from promoter.service.composition import pipeline_config
from tests.conftest import ROOT
from tests.core.test_pipeline import (
    INTENT_TAGS,
    MODEL,
    NAME,
    RENDERER,
    CountingImages,
    CountingSigner,
    MemoryLedger,
    MemoryProvider,
    MemoryRegistry,
    MemorySteps,
)
from tests.core.test_pipeline import SETTINGS as BASE_SETTINGS

ENV = "staging"
# The pyfunc image needs a Python base, a KServe modelcar a base with a shell (else the
# runtime is refused as invalid).
SETTINGS = BASE_SETTINGS.model_copy(update={"image": BASE_SETTINGS.image.model_copy(
    update={"base": "registry.test/python@sha256:" + "3c" * 32,
            "modelcar_base": "registry.test/busybox@sha256:" + "5e" * 32})})


def load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


# vLLM's server runs on CUDA: its intents need a GPU (runtime descriptor requiresGpu).
ONE_GPU = {"deploy.resources.gpu.count": "1", "deploy.resources.gpu.type": "nvidia-a100"}

@dataclasses.dataclass
class Run:
    registry: MemoryRegistry
    provider: MemoryProvider
    images: CountingImages
    signer: CountingSigner
    steps: MemorySteps
    renderer: Renderer = RENDERER
    checked: bool = True  # Targets.runtimes set, as the composition root does

    def promote(self, tags: dict[str, str], version: str = "1") -> Any:
        self.registry.add(MODEL, version, {**INTENT_TAGS, **tags})
        self.registry.set_alias(MODEL, ENV, version)
        config = (pipeline_config(SETTINGS, self.renderer) if self.checked
                  else SETTINGS.pipeline_config())
        ports = Ports(self.registry, self.provider, MemoryLedger(), self.renderer, self.images,
                      self.signer, self.signer)
        return Pipeline(config, ports).run(PromotionJob(MODEL, ENV, "promote", version),
                                           self.steps)

    def file(self, name: str) -> Any:
        return load(self.provider.branches[f"promote/{NAME}/{ENV}"][
            f"deploy/{NAME}/overlays/{ENV}/{name}"])


@pytest.fixture
def run() -> Run:
    return Run(MemoryRegistry(), MemoryProvider(), CountingImages(), CountingSigner(),
               MemorySteps())


def volume_reference(patch: dict[str, Any]) -> str:
    volumes = patch["spec"]["template"]["spec"]["volumes"]
    return str(next(v["image"]["reference"] for v in volumes if "image" in v))


def test_deployment_runtime_builds_the_pyfunc_image_and_pins_it(run: Run) -> None:
    result = run.promote({"deploy.runtime": "deployment"})
    assert run.images.kinds == ["pyfunc-image"] and run.images.modelcars == []
    kustomization = run.file("kustomization.yaml")
    image = kustomization["images"][0]
    assert f"{image['newName']}@{image['digest']}" == result.image
    assert run.signer.signed == [result.image]


def test_triton_builds_a_modelcar_with_its_layout_inputs_and_mounts_the_signed_digest(
        run: Run) -> None:
    result = run.promote({"deploy.runtime": "triton", "deploy.serving.modelFormat": "onnx",
                          "deploy.serving.maxBatchSize": "8"})
    assert run.images.kinds == ["modelcar"]
    assert run.images.modelcars == [ModelcarRequest("triton", NAME, "onnx", 8)]
    assert run.images.calls == [(MODEL, "1", f"registry.test/models/{NAME}")]
    assert run.signer.signed == [result.image]
    assert volume_reference(run.file("patch-deployment.yaml")) == result.image
    assert run.steps.results["image"]["artifact"] == "modelcar"
    assert run.steps.results["verify"]["digest"] == result.image.split("@")[1]


def test_vllm_on_kserve_pulls_the_signed_modelcar_by_storage_uri(run: Run) -> None:
    result = run.promote({"deploy.runtime": "vllm", **ONE_GPU})
    assert run.images.modelcars == [ModelcarRequest("huggingface", NAME, "onnx", 0)]
    model = run.file("patch-inferenceservice.yaml")["spec"]["predictor"]["model"]
    assert model["storageUri"] == f"oci://{result.image}"
    assert run.signer.signed == [result.image]


@pytest.mark.parametrize("tags", [
    {"deploy.runtime": "deployment"},
    {"deploy.runtime": "triton", "deploy.serving.modelFormat": "onnx"},
    {"deploy.runtime": "vllm", **ONE_GPU}], ids=["pyfunc-image", "triton-modelcar",
                                                "kserve-modelcar"])
def test_the_promoted_overlay_rerenders_unchanged_from_the_pins_it_records(
        run: Run, tags: dict[str, str]) -> None:
    """What `promoter rightsize` and `promoter forecast` do with the overlay a promotion left:
    read its pins back (core.live_overlay) and render the same intent again. Every overlay file
    must come out as the promotion wrote it: the signed digest, the lineage, the image volume or
    storageUri; nothing a proposal builds no artifact for may go missing."""
    result = run.promote(tags)
    prefix = f"deploy/{NAME}/overlays/{ENV}/"
    promoted = {path: text for path, text in run.provider.branches[f"promote/{NAME}/{ENV}"].items()
                if path.startswith(prefix)}
    pins = live_overlay.pins_of(promoted[f"{prefix}kustomization.yaml"])
    artifact = pins.image or pins.modelcar
    assert artifact is not None and artifact.reference == result.image
    info = run.registry.model_version(MODEL, "1")
    intent = {"apiVersion": API_VERSION, "kind": KIND, **run.registry.intent(info)}
    request = live_overlay.request(pipeline_config(SETTINGS, run.renderer).targets, intent, ENV,
                                   origin="the live overlay", model=ModelRef(name=MODEL,
                                                                             version="1"),
                                   pins=pins, scaling=None)
    rendered = {f"deploy/{path}": text for path, text in run.renderer.render(request).items()
                if path.startswith(f"{NAME}/overlays/{ENV}/")}
    assert rendered == promoted


def test_a_kserve_modelcar_without_a_shell_base_is_refused_before_any_build(run: Run) -> None:
    settings = SETTINGS.model_copy(update={"image": SETTINGS.image.model_copy(
        update={"modelcar_base": None})})
    ports = Ports(run.registry, run.provider, MemoryLedger(), RENDERER, run.images, run.signer)
    for runtime, platform, refused in (("kserve", "kserve", True), ("vllm", "kserve", True),
                                       ("vllm", "kubernetes", False)):
        run.registry.add(MODEL, "1", {**INTENT_TAGS, "deploy.runtime": runtime,
                                      "deploy.serving.platform": platform, **ONE_GPU})
        run.registry.set_alias(MODEL, ENV, "1")
        pipeline = Pipeline(pipeline_config(settings, RENDERER), ports)
        if refused:
            with pytest.raises(PermanentError, match=r"image\.modelcar_base"):
                pipeline.run(PromotionJob(MODEL, ENV, "promote", "1"), run.steps)
        else:   # an image volume runs nothing from the modelcar: no shell needed
            assert pipeline.run(PromotionJob(MODEL, ENV, "promote", "1"), run.steps).image
    assert run.images.modelcars == [ModelcarRequest("huggingface", NAME, "onnx", 0)]


def test_a_modelcar_repository_setting_sends_modelcars_there(run: Run) -> None:
    settings = SETTINGS.model_copy(update={"image": SETTINGS.image.model_copy(
        update={"modelcar_repository": "registry.test/modelcars/{name}"})})
    config = pipeline_config(settings, RENDERER)
    run.registry.add(MODEL, "1", {**INTENT_TAGS, "deploy.runtime": "kserve"})
    run.registry.set_alias(MODEL, ENV, "1")
    ports = Ports(run.registry, run.provider, MemoryLedger(), RENDERER, run.images, run.signer)
    result = Pipeline(config, ports).run(PromotionJob(MODEL, ENV, "promote", "1"), run.steps)
    assert run.images.calls == [(MODEL, "1", f"registry.test/modelcars/{NAME}")]
    assert result.image.startswith(f"registry.test/modelcars/{NAME}@sha256:")


def test_a_rerun_reuses_the_modelcar_but_a_runtime_change_builds_the_new_artifact(
        run: Run) -> None:
    first = run.promote({"deploy.runtime": "deployment"})
    again = run.promote({"deploy.runtime": "deployment"})
    assert again.image == first.image and run.images.kinds == ["pyfunc-image"]
    # Same version, new runtime (the tags changed): the recorded pyfunc image is not reused.
    switched = run.promote({"deploy.runtime": "triton", "deploy.serving.modelFormat": "onnx"})
    assert run.images.kinds == ["pyfunc-image", "modelcar"]
    assert switched.image != first.image
    assert run.signer.signed[-1] == switched.image
    run.promote({"deploy.runtime": "triton", "deploy.serving.modelFormat": "onnx"})
    assert run.images.kinds == ["pyfunc-image", "modelcar"]


def test_a_runtime_refusal_is_invalid_before_any_build(run: Run) -> None:
    with pytest.raises(PermanentError, match="maxModelLen") as refused:
        run.promote({"deploy.runtime": "triton", "deploy.serving.maxModelLen": "4096"})
    assert run.images.calls == [] and run.signer.signed == []
    assert run.registry.tags(MODEL, "1")[f"promoter.{ENV}.status"] == "invalid"
    assert run.registry.tags(MODEL, "1")[f"promoter.{ENV}.reason"] == refused.value.message


def test_an_unknown_runtime_is_invalid_even_without_targets_runtimes(run: Run) -> None:
    run.checked = False
    with pytest.raises(PermanentError, match="not a known runtime"):
        run.promote({"deploy.runtime": "torchserve"})
    assert run.images.calls == []
    assert run.registry.tags(MODEL, "1")[f"promoter.{ENV}.status"] == "invalid"


def test_a_runtime_without_an_artifact_builds_and_signs_nothing(run: Run) -> None:
    directory = ROOT / "templates"
    templates = rendering.load_templates(directory)
    templates.update({name.replace("deployment/", "external/", 1): text
                      for name, text in templates.items() if name.startswith("deployment/")})
    descriptors = rendering.load_descriptors(directory)
    descriptors["external"] = {**descriptors["deployment"], "artifact": "none"}
    run.renderer = Renderer(templates, descriptors)
    result = run.promote({"deploy.runtime": "external"})
    assert (run.images.calls, run.signer.signed) == ([], [])
    assert (result.image, result.signature) == (None, None)
    assert result.outcome == "created"


# A 32-head model whose config.json gives 4096 tokens (vLLM's refusals: core/vllm_fit.py).
LLAMA_FILES = HuggingFaceFiles(names=frozenset({"config.json", "model.safetensors"}),
                               config={"model_type": "llama", "num_attention_heads": 32,
                                       "max_position_embeddings": 4096})


def vllm_gpus(count: int, **serving: str) -> dict[str, str]:
    return {"deploy.runtime": "vllm", "deploy.resources.gpu.count": str(count),
            "deploy.resources.gpu.type": "nvidia-a100",
            **{f"deploy.serving.{key}": value for key, value in serving.items()}}


def test_vllm_flags_the_model_cannot_start_with_are_invalid_before_any_build(
        run: Run) -> None:
    run.registry.hf_files[(MODEL, "1")] = LLAMA_FILES
    with pytest.raises(InvalidIntent) as refused:
        run.promote(vllm_gpus(3, maxModelLen="8192"))
    assert "spec.resources.gpu.count: 3 GPUs" in refused.value.message
    assert "spec.serving.maxModelLen: 8192" in refused.value.message
    assert run.images.calls == [] and run.provider.proposals == []
    assert run.registry.tags(MODEL, "1")[f"promoter.{ENV}.status"] == "invalid"
    assert run.registry.tags(MODEL, "1")[f"promoter.{ENV}.reason"] == refused.value.message


def test_vllm_fit_is_checked_again_when_the_built_modelcar_is_reused(run: Run) -> None:
    run.registry.hf_files[(MODEL, "1")] = LLAMA_FILES
    first = run.promote(vllm_gpus(2, maxModelLen="4096"))
    assert first.image and run.images.kinds == ["modelcar"]
    # The same version, its intent changed to 3 GPUs: the recorded modelcar would be reused,
    # and the pod would still crash-loop; the check reads config.json again.
    with pytest.raises(InvalidIntent, match=r"spec\.resources\.gpu\.count: 3 GPUs"):
        run.promote(vllm_gpus(3))
    assert run.images.kinds == ["modelcar"] and len(run.provider.proposals) == 1


def test_vllm_defaults_read_no_model_files(run: Run) -> None:
    """One GPU and no maxModelLen: vLLM's own defaults fit every model, nothing is read."""
    run.registry.hf_files[(MODEL, "1")] = LLAMA_FILES
    assert run.promote(vllm_gpus(1)).image
    assert run.registry.hf_reads == []
    run.promote({"deploy.runtime": "triton", "deploy.serving.modelFormat": "onnx",
                 "deploy.resources.gpu.count": "3"}, version="2")
    assert run.registry.hf_reads == []   # not vLLM: its rules do not apply
