"""What the team GPU quota reads of GitLab (the stand-in, through python-gitlab): the branches of
its own team's open proposals, never another team's (core.verdict.claimed_elsewhere)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from promoter.core import mr_text
from promoter.core.results import DeploymentStatus
from promoter.core.verdict import claimed_elsewhere
from promoter.ports.git import branch_for
from promoter.ports.pipeline import DeployedState
from tests.core.test_pipeline import SETTINGS
from tests.core.test_policy import gpu
from tests.gitlab.conftest import ENV, GitLabHarness, proposal
from tests.gitlab.standin.server import StandIn

CONFIG = SETTINGS.model_copy(update={
    "policy": SETTINGS.policy.model_copy(update={"team_gpu_quota": {"risk": 100}})},
).pipeline_config()
ROOT = CONFIG.manifests_root


def overlay(team: str, gpus: int) -> str:
    """An overlay kustomization as promoter renders it, with the annotations the quota reads."""
    return ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"commonAnnotations:\n  promoter.dev/team: {team}\n"
            f"  promoter.dev/gpu-claim: \"{gpus}\"\n")


def open_proposal(harness: GitLabHarness, name: str, team: str, gpus: int) -> DeployedState:
    path = f"{ROOT}/{name}/overlays/{ENV}/kustomization.yaml"
    result = harness.provider.propose(dataclasses.replace(
        proposal(), model=name, name=name, files={path: overlay(team, gpus)},
        managed_prefixes=(f"{ROOT}/{name}/overlays/{ENV}/",), title=f"Promote {name}",
        labels=mr_text.labels(ENV, team), approvals_required=0))
    assert result.mr_iid is not None
    return DeployedState(name, ENV, name, "1", DeploymentStatus.MR_OPENED, result.mr_iid)


def test_the_quota_reads_only_its_own_teams_open_proposals(standin: StandIn,
                                                           tmp_path: Path) -> None:
    harness = GitLabHarness(standin, tmp_path)
    rows = [open_proposal(harness, "model-a", "risk", 4),
            open_proposal(harness, "model-b", "vision", 8),
            open_proposal(harness, "model-c", "vision", 16),
            open_proposal(harness, "model-d", "search", 2)]
    # A proposal whose team label a human removed: its team is unknown, so it is read.
    unlabelled = open_proposal(harness, "model-e", "risk", 1)
    harness.as_user("bot-token").mergerequests.update(unlabelled.mr_iid,
                                                      {"labels": "promoter,env::production"})
    standin.requests.clear()
    this = gpu(1, "nvidia-a100", 1)   # team risk, deployment fraud-detector
    claimed = claimed_elsewhere(CONFIG, lambda: harness.provider, ENV, this,
                                lambda: [*rows, unlabelled])
    read = [path for _, path in standin.requests if "/repository/files/" in path]
    assert [name for name in ("model-a", "model-b", "model-c", "model-d", "model-e")
            if any(name in path for path in read)] == ["model-a", "model-e"]
    assert claimed == {"risk": 5}


def test_another_teams_proposal_takes_a_deployment_away_from_the_team(
        standin: StandIn, tmp_path: Path) -> None:
    """A deployment of the team on the target branch whose open proposal hands it to another
    team no longer counts for the team, though its branch is not read."""
    harness = GitLabHarness(standin, tmp_path)
    handed_over = open_proposal(harness, "model-b", "risk", 8)
    harness.merge(handed_over.mr_iid or 0, None)
    assert overlay("risk", 8) in (harness.provider.read(
        f"{ROOT}/model-b/overlays/{ENV}/kustomization.yaml", "main") or "")
    row = open_proposal(harness, "model-b", "vision", 8)
    this = gpu(1, "nvidia-a100", 1)
    assert claimed_elsewhere(CONFIG, lambda: harness.provider, ENV, this, lambda: [row]) == \
        {"risk": 0}
    assert harness.provider.read(f"{ROOT}/model-b/overlays/{ENV}/kustomization.yaml",
                                 branch_for("model-b", ENV)) == overlay("vision", 8)
