"""Policy rules over a merged ModelDeployment: what a model owner is told when a promotion is
refused, and that every rule is evaluated so one denial lists everything to fix."""

from __future__ import annotations

from typing import Any

import pytest

from promoter.core.policy import OTHER_DEPLOYMENTS, PolicyRules, RuleResult, decide, gpu_claim
from promoter.core.policy_scope import GpuClaim, team_quota_totals
from promoter.core.spec import ModelDeployment, deep_merge, resolve
from promoter.settings import DEFAULT_SPEC

BASE_INTENT: dict[str, Any] = {"spec": {
    "model": {"name": "Fraud Detector", "version": "3"},
    "owner": {"team": "risk", "costCenter": "cc-1"}}}


def deployment(**spec: Any) -> ModelDeployment:
    return resolve(defaults=DEFAULT_SPEC, intent=deep_merge(BASE_INTENT, {"spec": spec}),
                   environment="production")


def gpu(count: int, kind: str | None = None, max_replicas: int = 2) -> ModelDeployment:
    wanted: dict[str, Any] = {"count": count}
    if kind is not None:
        wanted["type"] = kind
    return deployment(resources={"gpu": wanted},
                      scaling={"minReplicas": 1, "maxReplicas": max_replicas})


def rule(result: list[RuleResult], name: str) -> RuleResult:
    found = [r for r in result if r.rule == name]
    assert len(found) == 1, f"expected exactly one {name!r} result in {result}"
    return found[0]


# ---------------------------------------------------------------- required tags

def test_required_tag_with_the_wanted_value_passes() -> None:
    decision = decide(deployment(), "production", {"validation_status": "passed"},
                      PolicyRules(required_tags={"validation_status": "passed"}))
    assert decision.allowed
    assert decision.reasons == []
    assert rule(list(decision.results), "tag validation_status").passed


def test_missing_required_tag_is_named_with_the_wanted_value() -> None:
    decision = decide(deployment(), "production", {},
                      PolicyRules(required_tags={"validation_status": "passed"}))
    assert not decision.allowed
    assert decision.reasons == ["tag validation_status: must be 'passed' but missing on the "
                                "model version"]


def test_required_tag_with_another_value_shows_the_actual_value() -> None:
    decision = decide(deployment(), "production", {"validation_status": "failed"},
                      PolicyRules(required_tags={"validation_status": "passed"}))
    assert decision.reasons == ["tag validation_status: must be 'passed' but is 'failed' on "
                                "the model version"]


def test_every_required_tag_is_checked_in_a_stable_order() -> None:
    rules = PolicyRules(required_tags={"validation_status": "passed", "bias_review": "done"})
    decision = decide(deployment(), "production", {"validation_status": "passed"}, rules)
    tag_rules = [r.rule for r in decision.results if r.rule.startswith("tag ")]
    assert tag_rules == ["tag bias_review", "tag validation_status"]
    assert [r.split(":")[0] for r in decision.reasons] == ["tag bias_review"]


# ---------------------------------------------------------------- GPU types per environment

@pytest.mark.parametrize(("candidate", "allowed", "passed", "detail"), [
    (gpu(0), ["nvidia-a100"], True, "no GPU requested"),
    (gpu(1, "nvidia-h100"), None, True, "nvidia-h100 (no restriction in production)"),
    (gpu(1), None, True, "any type (no restriction in production)"),
    (gpu(1, "nvidia-a100"), ["nvidia-a100", "nvidia-l4"], True,
     "nvidia-a100 is allowed in production"),
    (gpu(1, "nvidia-h100"), ["nvidia-a100", "nvidia-l4"], False,
     "nvidia-h100 is not allowed in production (allowed: nvidia-a100, nvidia-l4)"),
    (gpu(2), ["nvidia-a100"], False,
     "production allows only nvidia-a100; set spec.resources.gpu.type"),
])
def test_gpu_type_rule(candidate: ModelDeployment, allowed: list[str] | None, passed: bool,
                       detail: str) -> None:
    decision = decide(candidate, "production", {}, PolicyRules(allowed_gpu_types=allowed))
    found = rule(list(decision.results), "gpu type")
    assert (found.passed, found.detail) == (passed, detail)
    assert decision.allowed is passed


def test_gpu_types_come_from_the_environment_being_promoted_to() -> None:
    candidate = gpu(1, "nvidia-l4")
    assert decide(candidate, "staging", {}, PolicyRules(allowed_gpu_types=["nvidia-l4"])).allowed
    denied = decide(candidate, "production", {}, PolicyRules(allowed_gpu_types=["nvidia-a100"]))
    assert denied.reasons == ["gpu type: nvidia-l4 is not allowed in production "
                              "(allowed: nvidia-a100)"]


# ---------------------------------------------------------------- regions per environment

@pytest.mark.parametrize(("regions", "allowed", "passed", "detail"), [
    ([], None, True, "no restriction"),
    (["ap-south-1"], None, True, "no restriction"),
    (["eu-west-1"], ["eu-west-1", "eu-central-1"], True, "eu-west-1 allowed in production"),
    (["eu-west-1", "us-east-1", "ap-south-1"], ["eu-west-1"], False,
     "ap-south-1, us-east-1 not allowed in production (allowed: eu-west-1)"),
    ([], ["eu-west-1"], False,
     "production requires pinning to one of eu-west-1; set spec.regions"),
])
def test_region_rule(regions: list[str], allowed: list[str] | None, passed: bool,
                     detail: str) -> None:
    decision = decide(deployment(regions=regions), "production", {},
                      PolicyRules(allowed_regions=allowed))
    found = rule(list(decision.results), "regions")
    assert (found.passed, found.detail) == (passed, detail)


# ---------------------------------------------------------------- team GPU quota

@pytest.mark.parametrize(("count", "max_replicas", "quota", "passed", "detail"), [
    (2, 4, None, True, "8 GPUs at full scale (no quota for risk)"),
    (2, 4, 8, True, "8 of risk's 8 GPUs in production"),
    (2, 4, 7, False,
     "risk claims 8 GPUs in production at full scale (gpu.count x maxReplicas, summed over "
     "fraud-detector (8)), over its quota of 7; lower maxReplicas or the GPU count, or free "
     "GPUs"),
    (0, 50, 0, True, "0 of risk's 0 GPUs in production"),
])
def test_team_gpu_quota_counts_gpus_at_full_scale(count: int, max_replicas: int,
                                                  quota: int | None, passed: bool,
                                                  detail: str) -> None:
    quotas = {} if quota is None else {"risk": quota}
    decision = decide(gpu(count, "nvidia-a100" if count else None, max_replicas),
                      "production", {}, PolicyRules(team_gpu_quota=quotas))
    found = rule(list(decision.results), "team gpu quota")
    assert (found.passed, found.detail) == (passed, detail)


def test_the_quota_covers_what_the_team_already_runs_in_the_environment() -> None:
    rules = PolicyRules(team_gpu_quota={"risk": 12})
    fits = decide(gpu(2, "nvidia-a100", 2), "production", {}, rules, {"risk": 8})
    assert rule(list(fits.results), "team gpu quota").detail == "12 of risk's 12 GPUs in production"
    over = decide(gpu(2, "nvidia-a100", 3), "production", {}, rules,
                  {"risk": 8, "search": 100})
    found = rule(list(over.results), "team gpu quota")
    assert not found.passed and "fraud-detector (6), its other deployments here (8)" in found.detail


def _claimants(message: str) -> tuple[str, str]:
    """A quota denial split into its words and what it names as claiming the GPUs."""
    head, sep, tail = message.partition("summed over ")
    where, close, rest = tail.partition("), over")
    assert sep and close, message
    return f"{head}summed over <where>{close}{rest}", where


@pytest.mark.parametrize(("quotas", "default"), [
    ({}, None), ({"risk": 11}, None), ({"risk": 12}, None), ({"risk": 13}, None),
    ({"search": 1}, 11), ({"search": 1}, 12), ({"risk": 20}, 1)])
def test_the_pipeline_and_the_ci_gate_judge_one_footprint_alike(quotas: dict[str, int],
                                                                default: int | None) -> None:
    """The pipeline (and `policy check`) learns the team's other deployments as one sum, the CI
    gate (`gitops policy`, gitops.policy.check_tree) as the overlay directories of the tree;
    given the same GPUs, on either side of the quota, both give the same verdict in the same
    words, except for what each names as claiming them: the deployment and its other
    deployments, or each overlay's path (in path order)."""
    this = gpu(2, "nvidia-a100", 2)   # 4 GPUs at full scale, beside 8 the team claims already
    this_overlay = "gitops/apps/fraud-detector/overlays/production"
    other_overlay = "gitops/apps/churn-model/overlays/production"   # sorts before this one
    pipeline = rule(list(decide(this, "production", {}, PolicyRules(
        team_gpu_quota=quotas, default_team_gpu_quota=default), {"risk": 8}).results),
        "team gpu quota")
    gate = team_quota_totals([GpuClaim(this_overlay, "risk", "production", gpu_claim(this)),
                              GpuClaim(other_overlay, "risk", "production", 8)],
                             quotas, default).get(("risk", "production"))
    if gate is None:   # no quota for risk: the gate has no verdict, the pipeline records so
        assert pipeline == RuleResult("team gpu quota", True,
                                      "4 GPUs at full scale (no quota for risk)")
    elif gate.passed:
        assert pipeline == gate
    else:
        assert not pipeline.passed and pipeline.rule == gate.rule
        pipeline_words, pipeline_where = _claimants(pipeline.detail)
        gate_words, gate_where = _claimants(gate.detail)
        assert pipeline_words == gate_words
        assert pipeline_where == f"{this.name} (4), {OTHER_DEPLOYMENTS} (8)"
        assert gate_where == f"{other_overlay} (8), {this_overlay} (4)"


def test_quota_of_another_team_does_not_apply() -> None:
    decision = decide(gpu(4, "nvidia-a100", 4), "production", {},
                      PolicyRules(team_gpu_quota={"search": 1}))
    assert decision.allowed


# ---------------------------------------------------------------- the decision as a whole

def test_a_denial_lists_every_broken_rule_not_just_the_first() -> None:
    rules = PolicyRules(required_tags={"validation_status": "passed"},
                        allowed_gpu_types=["nvidia-a100"], allowed_regions=["eu-west-1"],
                        team_gpu_quota={"risk": 1})
    candidate = deployment(resources={"gpu": {"count": 2, "type": "nvidia-h100"}},
                           regions=["us-east-1"])
    decision = decide(candidate, "production", {"validation_status": "pending"}, rules)
    assert not decision.allowed
    assert [reason.split(":")[0] for reason in decision.reasons] == [
        "tag validation_status", "gpu type", "regions", "team gpu quota"]
    assert len(decision.results) == 4


def test_a_deployment_within_every_rule_is_allowed_with_each_result_recorded() -> None:
    rules = PolicyRules(required_tags={"validation_status": "passed"},
                        allowed_gpu_types=["nvidia-a100"], allowed_regions=["eu-west-1"],
                        team_gpu_quota={"risk": 4})
    candidate = deployment(resources={"gpu": {"count": 1, "type": "nvidia-a100"}},
                           regions=["eu-west-1"])
    decision = decide(candidate, "production", {"validation_status": "passed"}, rules)
    assert decision.allowed
    assert decision.reasons == []
    assert [r.rule for r in decision.results] == [
        "tag validation_status", "gpu type", "regions", "team gpu quota"]
    assert all(r.passed for r in decision.results)


def test_no_rules_configured_allows_anything() -> None:
    candidate = deployment(resources={"gpu": {"count": 16, "type": "whatever"}},
                           scaling={"minReplicas": 1, "maxReplicas": 1000},
                           regions=["mars-1"])
    decision = decide(candidate, "production", {}, PolicyRules())
    assert decision.allowed
    assert {r.rule for r in decision.results} == {"gpu type", "regions", "team gpu quota"}
