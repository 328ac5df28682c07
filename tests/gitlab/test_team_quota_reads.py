"""What the team GPU quota reads of GitLab (the stand-in, through python-gitlab): the branch of
every open proposal, whatever team its MR is labelled for, since a label anyone with MR rights
can edit must not decide what counts (core.verdict.claimed_elsewhere)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import unquote

import pytest

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


def test_a_relabelled_proposal_for_a_new_deployment_still_counts_for_its_team(
        standin: StandIn, tmp_path: Path) -> None:
    """Two new deployments of team risk proposed at once, 4 GPUs each; one MR relabelled as
    team vision's. Its branch says it is risk's, so it counts: otherwise a third model of risk
    would pass with the first two's GPUs half hidden, and each MR's CI gate (which sees only its
    own tree) passes too."""
    harness = GitLabHarness(standin, tmp_path)
    rows = [open_proposal(harness, "model-a", "risk", 4),
            open_proposal(harness, "model-b", "risk", 4),
            open_proposal(harness, "model-c", "vision", 16)]
    harness.as_user("bot-token").mergerequests.update(
        rows[1].mr_iid, {"labels": ",".join(mr_text.labels(ENV, "vision"))})
    this = gpu(1, "nvidia-a100", 1)   # team risk, deployment fraud-detector
    assert claimed_elsewhere(CONFIG, lambda: harness.provider, ENV, this, lambda: rows) == \
        {"risk": 8}


def merged(harness: GitLabHarness, name: str, team: str, gpus: int) -> None:
    """``name`` runs on the target branch for ``team`` (its proposal merged)."""
    landed = open_proposal(harness, name, team, gpus)
    harness.merge(landed.mr_iid or 0, None)
    assert harness.provider.read(f"{ROOT}/{name}/overlays/{ENV}/kustomization.yaml",
                                 "main") == overlay(team, gpus)


def branches_read(harness: GitLabHarness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The refs the quota reads single files on from now on (the branches of proposals; the
    target branch is listed with ``files``), recorded around the real provider."""
    refs: list[str] = []
    real = harness.provider.read

    def read(path: str, ref: str) -> str | None:
        refs.append(ref)
        return real(path, ref)

    monkeypatch.setattr(harness.provider, "read", read)
    return refs


def test_another_teams_proposal_takes_a_deployment_away_from_the_team(
        standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment of the team on the target branch whose open proposal hands it to another
    team no longer counts for the team: the tree says it was the team's, so the branch is read
    (the label alone is not trusted), and the branch says it is the other team's now."""
    harness = GitLabHarness(standin, tmp_path)
    merged(harness, "model-b", "risk", 8)
    row = open_proposal(harness, "model-b", "vision", 8)
    refs = branches_read(harness, monkeypatch)
    this = gpu(1, "nvidia-a100", 1)
    assert claimed_elsewhere(CONFIG, lambda: harness.provider, ENV, this, lambda: [row]) == \
        {"risk": 0}
    assert refs == [branch_for("model-b", ENV)]


def test_relabelling_a_teams_proposal_does_not_hide_its_running_gpus(
        standin: StandIn, tmp_path: Path) -> None:
    """Anyone who may edit MR labels can relabel the team's open proposal for a live deployment
    as another team's; the deployment's GPUs still count for the team, as its branch leaves
    them (the branch is read)."""
    harness = GitLabHarness(standin, tmp_path)
    merged(harness, "model-b", "risk", 8)
    row = open_proposal(harness, "model-b", "risk", 12)   # scaling it up
    harness.as_user("bot-token").mergerequests.update(
        row.mr_iid, {"labels": ",".join(mr_text.labels(ENV, "vision"))})
    this = gpu(1, "nvidia-a100", 1)
    assert claimed_elsewhere(CONFIG, lambda: harness.provider, ENV, this, lambda: [row]) == \
        {"risk": 12}


def files_read(standin: StandIn) -> list[str]:
    """The paths of the single files read through GitLab's files API since the last clear."""
    found = [unquote(path.split("/repository/files/", 1)[1].removesuffix("/raw"))
             for method, path in standin.requests if "/repository/files/" in path]
    return sorted(found)


def test_the_quota_reads_only_the_environments_overlay_kustomizations(
        standin: StandIn, tmp_path: Path) -> None:
    """One listing of the tree, then one read per overlay kustomization in the environment:
    not the bases, patches, other environments or plots (a request each on GitLab)."""
    harness = GitLabHarness(standin, tmp_path)
    merged(harness, "model-b", "risk", 8)
    for path in (f"{ROOT}/model-b/base/deployment.yaml", f"{ROOT}/model-b/overlays/{ENV}/hpa.yaml",
                 f"{ROOT}/model-b/overlays/staging/kustomization.yaml",
                 f"{ROOT}/model-b/forecast-{ENV}.png"):
        harness.human_commit("main", path, "kind: Thing\n", create=True)
    standin.requests.clear()
    this = gpu(1, "nvidia-a100", 1)
    assert claimed_elsewhere(CONFIG, lambda: harness.provider, ENV, this, lambda: []) == \
        {"risk": 8}
    assert files_read(standin) == [f"{ROOT}/model-b/overlays/{ENV}/kustomization.yaml"]
