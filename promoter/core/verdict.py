"""The whole policy verdict for one deployment in one environment: the built-in rules
(core.policy) and the configured gates (core.gates), each evaluated so a denial lists
everything. The pipeline and ``promoter policy check`` both ask here, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Callable

from promoter.core import tree_facts
from promoter.core.config import EnvironmentTarget, PipelineConfig, PolicyConfig
from promoter.core.gates import GateFacts, evaluate
from promoter.core.policy import Decision, PolicyRules, decide
from promoter.core.spec import ModelDeployment
from promoter.ports.git import GitProvider


def verdict(policy: PolicyConfig, target: EnvironmentTarget, deployment: ModelDeployment,
            facts: GateFacts) -> Decision:
    rules = PolicyRules(required_tags=policy.required_tags,
                        allowed_gpu_types=target.allowed_gpu_types,
                        allowed_regions=target.allowed_regions,
                        team_gpu_quota=policy.team_gpu_quota,
                        default_team_gpu_quota=policy.default_team_gpu_quota)
    built_in = decide(deployment, target.name, facts.tags, rules, facts.claimed)
    return Decision(built_in.results + tuple(evaluate(policy.gates, deployment, facts)))


def claimed_elsewhere(config: PipelineConfig, provider: Callable[[], GitProvider], env: str,
                      name: str) -> dict[str, int]:
    """team → GPUs the other deployments on the target branch claim in ``env`` (the facts'
    ``claimed``). Read only when a team quota is configured: it costs one read of the tree,
    and ``provider`` is only asked for then (a local check without quotas needs no forge)."""
    policy = config.policy
    if not policy.team_gpu_quota and policy.default_team_gpu_quota is None:
        return {}
    root, target = config.manifests_root, config.target_branch
    suffix = f"/overlays/{env}/kustomization.yaml"
    return tree_facts.team_claims({
        path: text for path, text in provider().files(f"{root}/", target).items()
        if path.endswith(suffix) and not path.startswith(f"{root}/{name}/")})
