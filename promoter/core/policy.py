"""Policy: may this deployment run in this environment? Pure rules over the merged intent.

Every rule is evaluated (not just up to the first failure) so a denial lists everything a model
owner has to fix at once. Rules come from settings, not code:

- ``required_tags``: MLflow model-version tags that must hold given values
  (e.g. ``validation_status: passed``);
- ``allowed_gpu_types`` per environment;
- ``allowed_regions`` per environment: every pinned region must be in the list;
- ``team_gpu_quota``: the most GPUs a team's deployments may claim together in one
  environment at full scale (gpu count x maxReplicas, summed over what the target branch runs,
  the other open proposals and this change); a team without an entry gets
  ``default_team_gpu_quota`` (none: unlimited). Settings refuse a quota without
  ``policy.teams``, whose gate denies an unlisted team: otherwise an owner would name a new
  team and escape the quota.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from promoter.core.spec import ModelDeployment


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class PolicyRules:
    required_tags: Mapping[str, str] = field(default_factory=dict)
    allowed_gpu_types: Sequence[str] | None = None
    allowed_regions: Sequence[str] | None = None
    team_gpu_quota: Mapping[str, int] = field(default_factory=dict)
    default_team_gpu_quota: int | None = None


@dataclass(frozen=True)
class Decision:
    results: tuple[RuleResult, ...]

    @property
    def allowed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def reasons(self) -> list[str]:
        return [f"{r.rule}: {r.detail}" for r in self.results if not r.passed]


def gpu_claim(deployment: ModelDeployment) -> int:
    """GPUs a deployment can hold at full scale: GPUs per replica x maxReplicas."""
    return deployment.spec.resources.gpu.count * deployment.spec.scaling.max_replicas


def decide(deployment: ModelDeployment, env: str, tags: Mapping[str, str],
           rules: PolicyRules, claimed: Mapping[str, int] | None = None) -> Decision:
    """``claimed``: team → GPUs its other deployments already claim in ``env`` (what the
    GitOps target branch runs and the open proposals would add, core.verdict.claimed_elsewhere);
    the team quota covers their sum with this one."""
    results = [_required_tag(key, wanted, tags)
               for key, wanted in sorted(rules.required_tags.items())]
    results.append(_gpu_type(deployment, env, rules.allowed_gpu_types))
    results.append(_regions(deployment, env, rules.allowed_regions))
    results.append(_quota(deployment, env, rules,
                          (claimed or {}).get(deployment.spec.owner.team, 0)))
    return Decision(tuple(result for result in results if result is not None))


def _required_tag(key: str, wanted: str, tags: Mapping[str, str]) -> RuleResult:
    actual = tags.get(key)
    if actual == wanted:
        return RuleResult(f"tag {key}", True, f"is {wanted!r}")
    shown = "missing" if actual is None else f"is {actual!r}"
    return RuleResult(f"tag {key}", False, f"must be {wanted!r} but {shown} on the model version")


def _gpu_type(deployment: ModelDeployment, env: str,
              allowed: Sequence[str] | None) -> RuleResult:
    gpu = deployment.spec.resources.gpu
    if not gpu.count:
        return RuleResult("gpu type", True, "no GPU requested")
    if allowed is None:
        return RuleResult("gpu type", True, f"{gpu.type or 'any type'} (no restriction in {env})")
    if gpu.type is None:
        return RuleResult("gpu type", False, f"{env} allows only {', '.join(allowed)}; "
                          "set spec.resources.gpu.type")
    if gpu.type not in allowed:
        return RuleResult("gpu type", False,
                          f"{gpu.type} is not allowed in {env} (allowed: {', '.join(allowed)})")
    return RuleResult("gpu type", True, f"{gpu.type} is allowed in {env}")


def _regions(deployment: ModelDeployment, env: str,
             allowed: Sequence[str] | None) -> RuleResult:
    regions = deployment.spec.regions
    if allowed is None:
        return RuleResult("regions", True, "no restriction")
    outside = [region for region in regions if region not in allowed]
    if outside:
        return RuleResult("regions", False, f"{', '.join(outside)} not allowed in {env} "
                          f"(allowed: {', '.join(allowed)})")
    if not regions:
        return RuleResult("regions", False, f"{env} requires pinning to one of "
                          f"{', '.join(allowed)}; set spec.regions")
    return RuleResult("regions", True, f"{', '.join(regions)} allowed in {env}")


def _quota(deployment: ModelDeployment, env: str, rules: PolicyRules,
           elsewhere: int) -> RuleResult:
    """The quota rule on what the pipeline knows: this deployment's claim, and the sum its
    team's other deployments claim in ``env`` (core.verdict.claimed_elsewhere)."""
    team, claim = deployment.spec.owner.team, gpu_claim(deployment)
    shares = [GpuShare(deployment.name, claim)]
    if elsewhere:
        shares.append(GpuShare(OTHER_DEPLOYMENTS, elsewhere))
    judged = team_gpu_quota(team, env, shares, rules.team_gpu_quota,
                            rules.default_team_gpu_quota)
    # Every rule leaves a result in the decision (the MR lists them), so "no quota" is one.
    return judged or RuleResult(TEAM_GPU_QUOTA, True,
                                f"{claim} GPUs at full scale (no quota for {team})")


TEAM_GPU_QUOTA = "team gpu quota"
# How the pipeline names the GPUs of the team's other deployments: it knows only their sum.
OTHER_DEPLOYMENTS = "its other deployments here"


@dataclass(frozen=True)
class GpuShare:
    """GPUs at full scale (core.policy.gpu_claim) that one part of a team's footprint in an
    environment claims: an overlay of the tree (the CI gate) or a deployment (the pipeline)."""

    where: str
    gpus: int


def team_gpu_quota(team: str, env: str, shares: Sequence[GpuShare], quotas: Mapping[str, int],
                   default: int | None) -> RuleResult | None:
    """The team GPU quota rule, for every caller: the pipeline and `policy check` (decide, on
    this deployment and what the team's others claim) and the CI gate (core.policy_scope, on
    every overlay of the tree). They gather ``shares`` from different facts; what counts,
    the sum, the comparison and the message are this one function's, so they cannot drift.
    None: the team has no quota (no entry and no default), so the rule does not apply."""
    limit = quotas.get(team, default)
    if limit is None:
        return None
    total = sum(share.gpus for share in shares)
    if total <= limit:
        return RuleResult(TEAM_GPU_QUOTA, True, f"{total} of {team}'s {limit} GPUs in {env}")
    where = ", ".join(f"{share.where} ({share.gpus})" for share in shares if share.gpus)
    return RuleResult(
        TEAM_GPU_QUOTA, False,
        f"{team} claims {total} GPUs in {env} at full scale (gpu.count x maxReplicas, summed "
        f"over {where}), over its quota of {limit}; lower maxReplicas or the GPU count, or "
        "free GPUs")
