"""Runtime descriptors and the intents each runtime refuses, by name, before anything renders."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from promoter import rendering
from promoter.adapters.schemas import problems as resource_problems
from promoter.core.intent import build_request as core_build_request
from promoter.core.manifest_context import server_args
from promoter.core.render import ImagePin, Renderer
from promoter.core.runtimes import ARG_FIELDS, Form
from promoter.core.spec import deep_merge
from promoter.errors import ConfigError, UserError
from promoter.settings import load_settings
from tests.conftest import EXAMPLES, ROOT

SETTINGS = load_settings(EXAMPLES / "promoter.yaml", environ={})
TEMPLATES = rendering.load_templates(ROOT / "templates")
DESCRIPTORS = rendering.load_descriptors(ROOT / "templates")
RENDERER = Renderer(TEMPLATES, DESCRIPTORS)
MODELCAR = ImagePin("registry.example.com/modelcars/m", "sha256:" + "cd" * 32)


def intent(example: str, **spec: Any) -> dict[str, Any]:
    document = rendering.load_intent_file(EXAMPLES / f"{example}.yaml")
    return deep_merge(document, {"spec": spec})


def render(document: dict[str, Any], env: str = "production", settings: Any = SETTINGS,
           **kwargs: Any) -> dict[str, str]:
    request = rendering.build_request(settings, document, env, origin="intent", **kwargs)
    return RENDERER.render(request)


def test_every_runtime_folder_has_a_valid_descriptor() -> None:
    assert set(RENDERER.runtimes) == {"deployment", "kserve", "vllm", "triton"}
    assert RENDERER.runtimes["kserve"].artifact == "modelcar"
    assert RENDERER.runtimes["deployment"].artifact == "pyfunc-image"


def test_a_broken_descriptor_names_its_runtime_and_field() -> None:
    broken = copy.deepcopy(DESCRIPTORS)
    broken["vllm"]["artifact"] = "tarball"
    broken["vllm"]["platforms"]["kserve"]["base"] = ["../../etc/passwd"]
    with pytest.raises(UserError) as caught:
        Renderer(TEMPLATES, broken)
    assert "templates/vllm/runtime.yaml" in caught.value.message
    assert "artifact" in caught.value.message and "platforms.kserve" in caught.value.message


def test_a_modelcar_runtime_names_its_layout_and_only_a_modelcar_runtime_does() -> None:
    assert {name: d.modelcar_layout for name, d in RENDERER.runtimes.items()} == {
        "deployment": None, "kserve": "mlflow", "vllm": "huggingface", "triton": "triton"}
    for runtime, change in (("vllm", {"modelcarLayout": None}),
                            ("vllm", {"modelcarLayout": "tarball"}),
                            ("deployment", {"modelcarLayout": "mlflow"})):
        broken = copy.deepcopy(DESCRIPTORS)
        broken[runtime].update(change)
        with pytest.raises(UserError,
                           match=f"(?s)templates/{runtime}/runtime.yaml.*modelcarLayout"):
            Renderer(TEMPLATES, broken)


def test_an_unknown_runtime_is_named_with_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"spec.runtime 'lambda' is not a known runtime "
                                        r"\(known: deployment, kserve, triton, vllm\)"):
        render(intent("fraud-detector", runtime="lambda"))


def test_kserve_standard_mode_refuses_concurrency_scaling() -> None:
    """KServe scales on concurrency/rps only with Knative; promoter renders Standard mode."""
    with pytest.raises(UserError) as caught:
        render(intent("vision-segmenter", scaling={"metric": "concurrency"}))
    assert "spec.scaling.metric: 'concurrency'" in caught.value.message
    assert "Standard" in caught.value.message and "cpu or memory" in caught.value.message


@pytest.mark.parametrize("example", ["vision-segmenter", "llm-chat"])
def test_kserve_refuses_a_scaling_target_over_100(example: str) -> None:
    """KServe's admission webhook refuses an HPA target over 100 whatever the metric; a
    plain Deployment's HPA takes it (150% of the memory request, say)."""
    with pytest.raises(UserError) as caught:
        render(intent(example, scaling={"metric": "memory", "target": 150}))
    assert "spec.scaling.target: 150 is over 100, the most kserve accepts" in \
        caught.value.message
    render(intent("fraud-detector", scaling={"metric": "memory", "target": 150}))


def test_kserve_inference_services_name_the_mode_kserve_0_16_validates() -> None:
    """KServe 0.16's webhook judges autoscaling by the exact annotation value "Standard":
    "RawDeployment" (its deprecated name) took the Knative rules, refusing cpu and memory."""
    for example in ("vision-segmenter", "llm-chat"):
        files = render(intent(example))
        isvc = next(text for path, text in files.items()
                    if path.endswith("base/inferenceservice.yaml"))
        assert "serving.kserve.io/deploymentMode: Standard" in isvc
        assert "RawDeployment" not in isvc


def test_an_option_the_runtime_does_not_accept_is_named() -> None:
    with pytest.raises(UserError) as caught:
        render(intent("vision-segmenter", serving={"maxModelLen": 4096}))
    assert "spec.serving.maxModelLen: runtime kserve does not accept it" in caught.value.message


def test_a_platform_the_runtime_does_not_offer_is_named() -> None:
    with pytest.raises(UserError, match="runtime triton renders kubernetes, not kserve"):
        render(intent("ad-ranker", serving={"platform": "kserve"}))


def test_one_environment_may_not_switch_the_platform() -> None:
    document = intent("llm-chat")
    document["spec"]["environments"]["staging"] = {"serving": {"platform": "kubernetes"}}
    with pytest.raises(UserError, match=r"serving\.platform may not differ"):
        render(document, env="staging")


def test_a_mig_profile_the_environment_does_not_offer_is_named() -> None:
    document = intent("ad-ranker", resources={"gpu": {"mig": "7g.80gb"}})
    with pytest.raises(UserError, match=r"'7g.80gb' is not a MIG profile the production GPU "
                                        r"nodes offer \(1g.10gb, 2g.20gb, 3g.40gb\)"):
        render(document)


def test_tensor_parallelism_over_mig_slices_is_refused() -> None:
    document = intent("code-assistant", resources={"gpu": {"mig": "3g.40gb"}})
    with pytest.raises(UserError, match="tensor parallelism needs whole GPUs"):
        render(document)


def test_more_than_one_mig_slice_is_refused_for_every_runtime() -> None:
    """A CUDA process sees one MIG instance: Triton (or any one-process server) given two
    slices rendered them both, the second reserved and idle; only vLLM refused it."""
    document = intent("ad-ranker", resources={"gpu": {"count": 2, "mig": "1g.10gb"}})
    with pytest.raises(UserError, match="runtime triton serves from one CUDA process, which "
                                        "sees one MIG instance"):
        render(document)


def test_mig_requests_the_mig_resource_not_whole_gpus() -> None:
    files = render(intent("ad-ranker"), modelcar=MODELCAR)
    patch = files["ad-ranker/overlays/production/patch-deployment.yaml"]
    assert 'nvidia.com/mig-1g.10gb: "1"' in patch
    assert "nvidia.com/gpu:" not in patch.replace("nvidia.com/gpu.product", "")


def test_the_pyfunc_image_without_a_base_is_refused_outside_the_demo() -> None:
    baseless = SETTINGS.model_copy(update={"image": SETTINGS.image.model_copy(
        update={"base": None})})
    with pytest.raises(UserError, match=r"without image\.base that image has no Python"):
        render(intent("fraud-detector"), settings=baseless)
    demo = baseless.model_copy(update={"image": baseless.image.model_copy(update={"demo": True})})
    assert render(intent("fraud-detector"), settings=demo)
    # A modelcar runtime needs no base: the refusal is about the pyfunc image only.
    assert render(intent("vision-segmenter"), settings=baseless)


def test_the_deployment_runtime_claims_no_metrics() -> None:
    files = render(intent("fraud-detector"))
    assert not any(path.endswith("servicemonitor.yaml") for path in files)
    assert not any("prometheus.io" in text for text in files.values())


def test_cost_label_keys_come_from_the_configuration() -> None:
    settings = SETTINGS.model_copy(update={"cost_labels": {
        **SETTINGS.cost_labels, "team": "kubecost.io/team", "environment": "stage"}})
    files = render(intent("llm-chat"), settings=settings, modelcar=MODELCAR)
    base = files["llm-chat/base/inferenceservice.yaml"]
    assert "kubecost.io/team: assistants" in base and "\n    team: assistants" not in base
    assert "stage: production" in files["llm-chat/overlays/production/kustomization.yaml"]
    monitor = files["llm-chat/base/servicemonitor.yaml"]
    assert "- kubecost.io/team" in monitor and "- stage" in monitor


def test_priority_class_and_zone_spread_follow_the_environment() -> None:
    envs = dict(SETTINGS.environments)
    envs["production"] = envs["production"].model_copy(
        update={"priority_class_name": None, "zone_spread": None})
    settings = SETTINGS.model_copy(update={"environments": envs})
    patch = render(intent("llm-chat"), settings=settings, modelcar=MODELCAR)[
        "llm-chat/overlays/production/patch-inferenceservice.yaml"]
    assert "priorityClassName" not in patch and "topologySpreadConstraints" not in patch
    staging = render(intent("llm-chat"), env="staging", modelcar=MODELCAR)[
        "llm-chat/overlays/staging/patch-inferenceservice.yaml"]
    assert "priorityClassName: models-staging" in staging
    assert "whenUnsatisfiable: ScheduleAnyway" in staging


def test_without_a_digest_no_modelcar_is_claimed() -> None:
    """Only a digest pins the signed artifact: a tag-only pin renders no storageUri."""
    request = rendering.build_request(SETTINGS, intent("vision-segmenter"), "production",
                                      origin="intent")
    unpinned = RENDERER.render(replace(request, modelcar=ImagePin("r.example/m")))
    patch = unpinned["vision-segmenter/overlays/production/patch-inferenceservice.yaml"]
    assert "storageUri" not in patch
    pinned = RENDERER.render(replace(request, modelcar=MODELCAR))
    assert f'storageUri: "oci://{MODELCAR.repository}@{MODELCAR.digest}"' in \
        pinned["vision-segmenter/overlays/production/patch-inferenceservice.yaml"]


def test_vllm_arguments_follow_the_environment() -> None:
    """Tensor parallelism follows each environment's GPU count; unset options are left out."""
    staging = render(intent("code-assistant"), env="staging", modelcar=MODELCAR)
    patch = staging["code-assistant/overlays/staging/patch-deployment.yaml"]
    for arg in ('"--tensor-parallel-size=4"', '"--max-model-len=8192"',
                '"--served-model-name=code-assistant"', '"--gpu-memory-utilization=0.92"'):
        assert arg in patch, arg
    bare = intent("code-assistant")
    del bare["spec"]["serving"]["gpuMemoryUtilization"]
    files = render(bare, modelcar=MODELCAR)
    assert "--gpu-memory-utilization" not in \
        files["code-assistant/overlays/production/patch-deployment.yaml"]


def test_naming_the_only_platform_a_runtime_has_is_accepted() -> None:
    files = render(intent("vision-segmenter", serving={"platform": "kserve"}), modelcar=MODELCAR)
    assert "vision-segmenter/base/inferenceservice.yaml" in files


def test_bad_gpu_scheduling_and_cost_label_settings_name_their_path(tmp_path: Path) -> None:
    config = tmp_path / "promoter.yaml"
    config.write_text(
        "environments:\n"
        "  production:\n"
        "    trigger: {alias: production}\n"
        "    namespace: models\n"
        "    mig_profiles: [1g.10gb, big]\n"
        "    priority_class_name: High_Priority\n"
        "    zone_spread: Sometimes\n"
        "cost_labels: {team: team, budget: b, model: 'not a key!'}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    message = caught.value.message
    for path in ("environments.production.mig_profiles", "environments.production."
                 "priority_class_name", "environments.production.zone_spread", "cost_labels"):
        assert path in message, path
    assert "'big'" in message and "budget" in message


def test_servicemonitors_are_checked_against_their_schema() -> None:
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "m"},
               "spec": {"selector": {}, "endpoints": [{"port": "http", "path": "/metrics"}]}}
    assert resource_problems(monitor) == []
    monitor["spec"]["endpoints"] = [{"port": 8080, "interval": "often"}]
    assert [p.split(":")[0] for p in resource_problems(monitor)] == [
        "spec.endpoints.0.interval", "spec.endpoints.0.port"]


def test_render_pins_the_signed_artifact_given_on_the_command_line(run_cli: Any) -> None:
    reference = f"{MODELCAR.repository}@{MODELCAR.digest}"
    code, out, err = run_cli("render", "--intent", str(EXAMPLES / "ad-ranker.yaml"),
                             "--env", "staging", "--dry-run", "--config",
                             str(EXAMPLES / "promoter.yaml"), "--modelcar", reference)
    assert code == 0, err
    assert f'reference: "{reference}"' in out
    code, _, err = run_cli("render", "--intent", str(EXAMPLES / "ad-ranker.yaml"),
                           "--env", "staging", "--dry-run", "--modelcar", "repo:latest")
    assert code == 2 and "--modelcar must be REPOSITORY@sha256:" in err


def test_targets_carrying_the_runtimes_refuse_while_resolving() -> None:
    """So a promotion can tag an invalid intent before it builds anything."""
    targets = replace(SETTINGS.targets(), runtimes=RENDERER.runtimes)
    concurrency = intent("vision-segmenter", scaling={"metric": "concurrency"})
    with pytest.raises(UserError, match=r"spec\.scaling\.metric: 'concurrency'"):
        core_build_request(targets, concurrency, "production", origin="intent")
    baseless = replace(targets, image_base_configured=False)
    with pytest.raises(UserError, match=r"without image\.base"):
        core_build_request(baseless, intent("fraud-detector"), "production", origin="intent")
    # Without runtimes (the default) resolving leaves these checks to the renderer.
    assert core_build_request(SETTINGS.targets(), concurrency, "production", origin="intent")


def test_server_images_pinned_by_digest_in_settings_replace_the_descriptor_tag() -> None:
    pinned = "docker.io/vllm/vllm-openai@sha256:" + "ef" * 32
    settings = SETTINGS.model_copy(update={"runtime_images": {"vllm": pinned}})
    request = rendering.build_request(settings, intent("code-assistant"), "production",
                                      origin="intent", modelcar=MODELCAR)
    files = rendering.renderer(settings).render(request)
    assert f'image: "{pinned}"' in files["code-assistant/base/deployment.yaml"]
    with pytest.raises(UserError, match=r"runtime_images\.kserve: no runtime 'kserve' with a "
                                        r"server image \(runtimes that have one: triton, vllm\)"):
        rendering.renderer(settings.model_copy(update={"runtime_images": {"kserve": pinned}}))


def test_runtime_images_must_be_pinned_by_digest(tmp_path: Path) -> None:
    config = tmp_path / "promoter.yaml"
    config.write_text("runtime_images: {vllm: 'docker.io/vllm/vllm-openai:latest'}\n")
    with pytest.raises(ConfigError, match=r"runtime_images: .*is not pinned by digest"):
        load_settings(config, environ={})


@pytest.mark.parametrize(("change", "message"), [
    ({"options": ["maxModelLength"]}, "options maxModelLength are not spec.serving fields"),
    ({"platforms": {"kserve": {"args": ["--max-model-len={maxModelLength}"]}}},
     "names unknown field(s) maxModelLength"),
])
def test_a_misspelt_option_or_argument_field_in_a_descriptor_is_named(
        change: dict[str, Any], message: str) -> None:
    broken = copy.deepcopy(DESCRIPTORS)
    broken["vllm"] = deep_merge(broken["vllm"], change)
    with pytest.raises(UserError) as caught:
        Renderer(TEMPLATES, broken)
    assert message in caught.value.message


def test_every_argument_field_a_descriptor_may_name_is_filled_in() -> None:
    form = Form(base=("a.yaml",), overlay=("b.yaml",), scalingMetrics=("cpu",),
                args=tuple(f"--x={{{field}}}" for field in sorted(ARG_FIELDS)))
    request = rendering.build_request(SETTINGS, intent("code-assistant"), "production",
                                      origin="intent")
    args = server_args(form, request.deployment)
    assert len(args) == len(ARG_FIELDS) and not any("{" in arg for arg in args)


def test_kserve_forms_name_a_mode_and_bound_that_kserve_0_16_judges_as_hpa() -> None:
    """Against KServe 0.16's webhook source (tests/data/kserve_webhook, with provenance): the
    mode a KServe form names takes the HPA branch of validateAutoScalingCompExtension, and
    its scaleTargetMax is the HPA rules' bound."""
    data = Path(__file__).parent / "data" / "kserve_webhook"
    constants = dict(re.findall(r'^\s*(\w+)\s+DeploymentModeType = "(\w+)"',
                                (data / "deployment_modes-v0.16.0.go.txt").read_text(), re.M))
    switch = (data / "validate_autoscaling-v0.16.0.go.txt").read_text()
    outer = switch.split("switch autoscalerClass")[0]    # the deploymentMode cases before it
    hpa_modes = {constants[name] for name in re.findall(r"case string\(constants\.(\w+)\)",
                                                          outer)}
    bound = int(re.search(r"target > (\d+)",
                          (data / "validate_hpa_scaling-v0.16.0.go.txt").read_text())[1])
    assert hpa_modes == {"Standard"} and bound == 100
    forms = [descriptor.platforms["kserve"] for descriptor in RENDERER.runtimes.values()
             if "kserve" in descriptor.platforms]
    assert forms
    for form in forms:
        assert form.deployment_mode in hpa_modes and form.scale_target_max == bound


@pytest.mark.parametrize(("example", "serving", "says"), [
    ("llm-chat", {}, "runtime vllm needs a GPU"),
    ("code-assistant", {}, "runtime vllm needs a GPU"),
    ("ad-ranker", {"modelFormat": "tensorrt"}, "runtime triton with modelFormat tensorrt needs")])
def test_a_server_that_runs_on_cuda_needs_a_gpu(example: str, serving: dict[str, Any],
                                                 says: str) -> None:
    """Rendered without one, vLLM's CUDA image (or a TensorRT plan) started on a node with no
    GPU and crashed; an ONNX model on Triton runs on CPU."""
    without = {"resources": {"gpu": {"count": 0, "type": None, "mig": None}}}
    with pytest.raises(UserError) as caught:
        render(deep_merge(intent(example, serving=serving), {"spec": without}))
    assert f"spec.resources.gpu.count: {says}" in caught.value.message
    render(deep_merge(intent("ad-ranker", serving={"modelFormat": "onnx"}), {"spec": without}))
