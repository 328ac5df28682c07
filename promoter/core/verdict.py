"""The whole policy verdict for one deployment in one environment: the built-in rules
(core.policy) and the configured gates (core.gates), each evaluated so a denial lists
everything. The pipeline and ``promoter policy check`` both ask here, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from promoter.core import tree_facts
from promoter.core.config import EnvironmentTarget, PipelineConfig, PolicyConfig
from promoter.core.gates import GateFacts, evaluate
from promoter.core.policy import TEAM_GPU_QUOTA, Decision, PolicyRules, decide
from promoter.core.results import DeploymentStatus
from promoter.core.spec import ModelDeployment
from promoter.ports.git import BranchReader, branch_for
from promoter.ports.pipeline import DeployedState


def verdict(policy: PolicyConfig, target: EnvironmentTarget, deployment: ModelDeployment,
            facts: GateFacts) -> Decision:
    rules = PolicyRules(required_tags=policy.required_tags,
                        allowed_gpu_types=target.allowed_gpu_types,
                        allowed_regions=target.allowed_regions,
                        team_gpu_quota=policy.team_gpu_quota,
                        default_team_gpu_quota=policy.default_team_gpu_quota)
    built_in = decide(deployment, target.name, facts.tags, rules, facts.claimed)
    return Decision(built_in.results + tuple(evaluate(policy.gates, deployment, facts)))


def team_quota(policy: PolicyConfig, deployment: ModelDeployment) -> int | None:
    """The GPU quota of ``deployment``'s team (its own, else the default; None: none)."""
    return policy.team_gpu_quota.get(deployment.spec.owner.team, policy.default_team_gpu_quota)


def without_passed_quota(decision: Decision) -> Decision:
    """``decision`` judged with the GPUs the team's other deployments claim unknown (counted
    as none): a quota denial stands, since they can only add to it, but a pass says nothing,
    so it is taken out (the caller reports the quota as not checked)."""
    return Decision(tuple(result for result in decision.results
                          if result.rule != TEAM_GPU_QUOTA or not result.passed))


# Ledger statuses of a proposal whose MR is still open and may merge: its GPUs count against
# the team quota before it lands (a decommissioning MR only frees GPUs, so it is not one).
OPEN_PROPOSALS = frozenset({DeploymentStatus.MR_OPENED, DeploymentStatus.APPROVED,
                            DeploymentStatus.NEEDS_ATTENTION})


def claimed_elsewhere(config: PipelineConfig, provider: Callable[[], BranchReader], env: str,
                      deployment: ModelDeployment,
                      open_proposals: Callable[[], Iterable[DeployedState]] = lambda: (),
                      ) -> dict[str, int]:
    """{team: GPUs} the other deployments of ``deployment``'s team claim in ``env`` (the facts'
    ``claimed``): what the target branch runs, with each deployment that has an open proposal
    (a ledger row in ``OPEN_PROPOSALS``) counted as its MR branch would leave it, so two models
    of one team each within the quota alone cannot both be proposed. Two jobs deciding at the
    same instant can still both pass (neither row exists yet); the CI gate, which sums the MR's
    whole resulting tree, catches the second MR.

    Every open proposal's branch is read, whichever team its MR is labelled for: a label
    anyone with MR rights can edit must not decide what counts (relabelling a proposal for a new
    deployment, or one over a running one, would hide its GPUs from this team's count).

    Read only when a team quota is configured: it costs one listing of the tree, one read per
    overlay in ``env`` and one per open proposal, and ``provider`` is only asked for then (a
    local check without quotas needs no forge)."""
    policy = config.policy
    if not policy.team_gpu_quota and policy.default_team_gpu_quota is None:
        return {}
    root, target = config.manifests_root, config.target_branch
    name, team = deployment.name, deployment.spec.owner.team
    git = provider()
    suffix = f"/overlays/{env}/kustomization.yaml"
    # The tree's paths, then only this environment's overlay kustomizations (on GitLab each
    # file read is a request; the tree holds several files per overlay).
    listed = git.paths(f"{root}/", target) or frozenset()
    overlays = git.read_many(sorted(path for path in listed if path.endswith(suffix)
                                    and not path.startswith(f"{root}/{name}/")), target)
    rows = [row for row in open_proposals()
            if row.env == env and row.name != name and row.status in OPEN_PROPOSALS]
    for row in rows:
        path = tree_facts.overlay_kustomization(root, row.name, env)
        proposed = git.read(path, branch_for(row.name, env))
        if proposed is not None:   # no branch (merged and deleted): the target branch's counts
            overlays[path] = proposed
    return {team: tree_facts.team_claims(overlays).get(team, 0)}

