"""`promoter gitops policy`: every container the InferenceService predictor may run counts.

KServe's predictor carries its serving container as ``model`` or as one of the framework
fields (``huggingface``, ``triton``, ...); the gate counted GPUs in ``model`` and
``containers`` only, so moving the GPUs to a framework field hid the claim and the GPU type.
Multi-node worker pods (``workerSpec``) and dynamically allocated devices (``resourceClaims``)
cannot be counted from the manifests: they are refused.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from promoter.core.declared_intent import PREDICTOR_CONTAINER_FIELDS, UNJUDGED_POD_FIELDS
from promoter.settings import load_settings
from tests.conftest import EXAMPLES, ROOT, requires_kubectl
from tests.gitops.test_policy_gate import _as_rendered, _production_decision

SCHEMA = ROOT / "promoter/schemas/inferenceservice_v1beta1.json"
FRAMEWORKS = sorted(set(PREDICTOR_CONTAINER_FIELDS) - {"model"})


def _assistants_with_quota(quota: int) -> Any:
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    return settings.model_copy(update={"policy": settings.policy.model_copy(
        update={"team_gpu_quota": {"assistants": quota}})})


def _predictor(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "InferenceService")["spec"]["predictor"]


def test_the_counted_and_refused_fields_are_every_predictor_field_with_resources() -> None:
    """Every predictor property the shipped KServe schema gives ``resources`` of its own is
    either counted as a container of the pod or refused, so a schema update adding a framework
    cannot open a new way around the gate unnoticed."""
    predictor = json.loads(SCHEMA.read_text())["properties"]["spec"]["properties"]["predictor"]
    with_resources = {name for name, field in predictor["properties"].items()
                      if "resources" in (field.get("properties") or {})}
    assert with_resources == set(PREDICTOR_CONTAINER_FIELDS) | {"workerSpec"}
    assert set(UNJUDGED_POD_FIELDS) <= set(predictor["properties"])


@requires_kubectl
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_gpus_in_a_framework_field_are_counted_and_placed(framework: str) -> None:
    """llm-chat's production overlay (1 GPU x 8 replicas, assistants' quota of 8) with its
    serving container moved to ``framework``, asking 4 GPUs on a forbidden product: the
    gate read "no GPU requested" and allowed it."""
    def to_framework(docs: list[dict]) -> None:
        predictor = _predictor(docs)
        container = predictor.pop("model")
        container.pop("modelFormat", None)
        container["resources"] = {"limits": {"nvidia.com/gpu": "4"}}
        predictor[framework] = container
        predictor["nodeSelector"]["nvidia.com/gpu.product"] = "NVIDIA-B200"

    settings = _assistants_with_quota(8)
    assert _production_decision(settings, _as_rendered, "llm-chat").allowed
    decision = _production_decision(settings, to_framework, "llm-chat")
    assert not decision.allowed
    reasons = " ".join(decision.reasons)
    assert "NVIDIA-B200 is not allowed in production" in reasons
    assert "assistants claims 32 GPUs in production" in reasons


def _worker_spec(docs: list[dict]) -> None:
    _predictor(docs)["workerSpec"] = {"pipelineParallelSize": 4, "containers": [
        {"name": "worker-container", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}


def _resource_claims(docs: list[dict]) -> None:
    _predictor(docs)["resourceClaims"] = [{"name": "gpus",
                                           "resourceClaimTemplateName": "eight-h100"}]


@requires_kubectl
@pytest.mark.parametrize(("edit", "field"), [(_worker_spec, "workerSpec"),
                                             (_resource_claims, "resourceClaims")])
def test_pods_the_gate_cannot_count_are_refused(edit: Any, field: str) -> None:
    """Worker pods (their GPUs and number derived by KServe from the parallelism sizes) and
    dynamically allocated devices were ignored: 1 GPU per replica was judged."""
    decision = _production_decision(_assistants_with_quota(8), edit, "llm-chat")
    assert not decision.allowed
    assert f"InferenceService/llm-chat sets {field}" in " ".join(decision.reasons)


MODE = "serving.kserve.io/deploymentMode"


def _without_max_replicas(mode: str | None) -> Any:
    def edit(docs: list[dict]) -> None:
        service = next(d for d in docs if d["kind"] == "InferenceService")
        service["spec"]["predictor"].pop("maxReplicas")
        annotations = service["metadata"].setdefault("annotations", {})
        annotations.pop(MODE, None)
        if mode is not None:
            annotations[MODE] = mode
    return edit


@requires_kubectl
@pytest.mark.parametrize("mode", ["Serverless", "Knative", None])
def test_a_predictor_without_max_replicas_outside_an_hpa_mode_is_refused(
        mode: str | None) -> None:
    """Knative scales a predictor without maxReplicas without bound; the gate judged the
    defaults' maxReplicas instead, so the team's GPU quota held on paper only."""
    decision = _production_decision(_assistants_with_quota(8), _without_max_replicas(mode),
                                     "llm-chat")
    assert not decision.allowed
    reasons = " ".join(decision.reasons)
    assert "InferenceService/llm-chat sets no predictor maxReplicas" in reasons
    assert "without bound" in reasons


@requires_kubectl
def test_in_standard_mode_a_predictor_without_max_replicas_runs_its_min_replicas() -> None:
    """KServe's HPA then gets maxReplicas = minReplicas (2 in llm-chat's production)."""
    decision = _production_decision(_assistants_with_quota(2), _without_max_replicas("Standard"),
                                    "llm-chat")
    assert decision.allowed, decision.reasons
    over = _production_decision(_assistants_with_quota(1), _without_max_replicas("Standard"),
                                "llm-chat")
    assert "assistants claims 2 GPUs in production" in " ".join(over.reasons)


@requires_kubectl
def test_an_external_autoscaler_the_overlay_does_not_hold_is_refused() -> None:
    def external(docs: list[dict]) -> None:
        service = next(d for d in docs if d["kind"] == "InferenceService")
        service["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] = "external"

    decision = _production_decision(_assistants_with_quota(8), external, "llm-chat")
    assert not decision.allowed
    assert "external autoscaler" in " ".join(decision.reasons)
