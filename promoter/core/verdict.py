"""The whole policy verdict for one deployment in one environment: the built-in rules
(core.policy) and the configured gates (core.gates), each evaluated so a denial lists
everything. The pipeline and ``promoter policy check`` both ask here, so they cannot disagree."""

from __future__ import annotations

from promoter.core.config import EnvironmentTarget, PolicyConfig
from promoter.core.gates import GateFacts, evaluate
from promoter.core.policy import Decision, PolicyRules, decide
from promoter.core.spec import ModelDeployment


def verdict(policy: PolicyConfig, target: EnvironmentTarget, deployment: ModelDeployment,
            facts: GateFacts) -> Decision:
    rules = PolicyRules(required_tags=policy.required_tags,
                        allowed_gpu_types=target.allowed_gpu_types,
                        allowed_regions=target.allowed_regions,
                        team_gpu_quota=policy.team_gpu_quota,
                        default_team_gpu_quota=policy.default_team_gpu_quota)
    built_in = decide(deployment, target.name, facts.tags, rules, facts.claimed)
    return Decision(built_in.results + tuple(evaluate(policy.gates, deployment, facts)))
