"""The policy on a forecast or right-sizing MR: placement rules, not the version's gates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from promoter.core.intent import resolve_intent
from promoter.forecasting import policy_verdict
from promoter.settings import Settings

SETTINGS = Settings.model_validate({
    "environments": {
        "staging": {"trigger": {"alias": "staging"}, "namespace": "models-staging"},
        "production": {"trigger": {"alias": "production"}, "namespace": "models-production",
                       "allowed_gpu_types": ["NVIDIA-A100-SXM4-80GB"]}},
    "policy": {
        "teams": {"risk": {}},
        "team_gpu_quota": {"risk": 4},
        "gates": [{"rule": "metric", "check": "auc >= 0.9", "environments": ["production"]},
                  {"rule": "staging_first", "after": "staging", "soak_seconds": 3600}]},
})


def _intent(gpu_type: str, max_replicas: int) -> dict[str, Any]:
    return {"apiVersion": "promoter.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "fraud"},
            "spec": {"model": {"name": "Fraud", "version": "3"},
                     "owner": {"team": "risk", "costCenter": "cc"},
                     "resources": {"cpu": "1", "memory": "1Gi",
                                   "gpu": {"count": 1, "type": gpu_type}},
                     "scaling": {"minReplicas": 1, "maxReplicas": max_replicas}}}


def _verdict(gpu_type: str, max_replicas: int) -> tuple[bool, list[str]]:
    targets = SETTINGS.targets()
    deployment = resolve_intent(targets, _intent(gpu_type, max_replicas), "production",
                                origin="test")
    decision = policy_verdict(SETTINGS, targets.environment("production"), deployment, {},
                              datetime.now(UTC))
    return decision.allowed, decision.reasons


def test_gates_on_the_version_do_not_deny_a_resize_of_it() -> None:
    """The version passed its metric gate and soak when promoted; a re-sizing MR gathers no
    run metrics nor audit history, and was denied by those gates every time."""
    assert _verdict("NVIDIA-A100-SXM4-80GB", 4) == (True, [])


def test_placement_and_quota_still_judge_a_resize() -> None:
    allowed, reasons = _verdict("NVIDIA-T4", 8)
    assert not allowed
    assert any("NVIDIA-T4" in reason for reason in reasons)
    assert any("quota" in reason for reason in reasons)
