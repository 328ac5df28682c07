"""The policy on a forecast or right-sizing MR: placement rules, not the version's gates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promoter.core.gates import GateFacts
from promoter.core.intent import resolve_intent
from promoter.core.verdict import verdict
from promoter.forecasting import policy_verdict, quota_bounded_max
from promoter.policy_check import claimed_by_others
from promoter.ports.git import Proposal
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
                              datetime.now(UTC), {})
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


def test_a_resize_counts_the_teams_other_deployments_as_the_pipeline_does() -> None:
    """Another risk deployment claims all 4 of risk's GPUs: the pipeline denies fraud at any
    size, and forecast and rightsize judged it on the whole quota (allowed), and bounded its
    replicas by it (4, not what is left)."""
    targets = SETTINGS.targets()
    target = targets.environment("production")
    deployment = resolve_intent(targets, _intent("NVIDIA-A100-SXM4-80GB", 4), "production",
                                origin="test")
    claimed = {"risk": 4}
    facts = GateFacts(model="Fraud", version="3", env="production",
                      namespace="models-production", claimed=claimed)
    pipeline = verdict(SETTINGS.pipeline_config().policy, target, deployment, facts)
    resize = policy_verdict(SETTINGS, target, deployment, {}, datetime.now(UTC), claimed)
    assert not pipeline.allowed and not resize.allowed
    quota = [r.detail for r in resize.results if r.rule == "team gpu quota"]
    assert quota == [r.detail for r in pipeline.results if r.rule == "team gpu quota"]
    assert "its other deployments here (4)" in quota[0]
    assert quota_bounded_max(SETTINGS, deployment, {"risk": 1}) == 3
    assert quota_bounded_max(SETTINGS, deployment, claimed) == 1   # minReplicas: denied


def test_a_resize_reads_the_claims_from_the_target_branch(tmp_path: Path) -> None:
    """With no claims given, forecast and rightsize count them as the pipeline does
    (core.verdict.claimed_elsewhere over the target branch and open proposals)."""
    from promoter import rendering
    from promoter.service import composition

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    other = _intent("NVIDIA-A100-SXM4-80GB", 3)
    other["metadata"]["name"] = "fraud-2"
    other["spec"]["model"]["name"] = "Fraud 2"
    request = rendering.build_request(settings, other, "production", origin="other")
    provider = composition.provider(settings)
    seeded = provider.propose(Proposal(
        model="Fraud 2", name="fraud-2", env="production", version="3", managed_prefixes=(),
        files={f"manifests/{path}": text
               for path, text in rendering.renderer(settings).render(request).items()},
        title="seed", description="seed"))
    assert seeded.mr_iid is not None
    provider.merge(seeded.mr_iid, "alice")
    deployment = resolve_intent(settings.targets(), _intent("NVIDIA-A100-SXM4-80GB", 4),
                                "production", origin="test")
    claimed = claimed_by_others(settings, settings.pipeline_config(), "production", deployment)
    assert claimed == {"risk": 3}
    assert quota_bounded_max(settings, deployment, claimed) == 1
