"""On both providers (GitLab through python-gitlab and the stand-in, and the local one):
`gitops init --propose` opens one MR and nothing once merged; the Argo CD status note is one
bot comment edited in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promoter.core.cluster_status import from_application
from promoter.gitops.scaffold import INIT_BRANCH, propose
from promoter.ports.pipeline import DeployedState
from promoter.service.audit import AuditTrail
from promoter.service.cluster_feedback import NOTE_HEADING, ClusterFeedback
from promoter.service.cluster_status_store import StatusStore
from promoter.service.ledger import StateLedger
from promoter.settings import load_settings
from tests.argocd.applications import application
from tests.gitlab.conftest import GitLabHarness, Harness, bot_notes, make_standin, proposal
from tests.signing.conftest import key_path


def _settings(tmp_path: Path) -> Any:
    config = tmp_path / "promoter.yaml"
    config.write_text(f'image: {{repository: "registry.example.com/models/{{name}}", '
                      f'verification_key: "{key_path(2, "pub")}"}}\n'
                      'argocd: {repo_url: "https://gitlab.example.com/group/gitops.git"}\n')
    return load_settings(config, environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})


def test_propose_opens_one_mr_then_nothing_once_merged(harness: Harness,
                                                       tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    planned, result = propose(settings, harness.provider)
    assert result is not None and result.merge_request is not None
    assert result.merge_request.source_branch == INIT_BRANCH
    assert {"argocd/applicationset.yaml", ".gitlab-ci.yml"} <= set(planned.files)
    _, second = propose(settings, harness.provider)
    assert second is not None and second.mr_iid == result.mr_iid   # the same MR, unchanged
    harness.approve(result.mr_iid, "alice")
    harness.merge(result.mr_iid, result.head_sha)
    done, third = propose(settings, harness.provider)
    assert third is None and done.files == {}
    assert harness.provider.read("CODEOWNERS", "main")


def test_status_note_is_one_comment_edited_in_place(harness: Harness, tmp_path: Path) -> None:
    opened = harness.provider.propose(proposal("7"))
    iid = opened.mr_iid
    assert iid is not None
    ledger = StateLedger(tmp_path / "state")
    ledger.put(DeployedState("Fraud Detector", "production", "fraud-detector", "7", "merged",
                             iid, opened.head_sha))
    feedback = ClusterFeedback(StatusStore(tmp_path / "state"), ledger,
                               AuditTrail(tmp_path / "state"), None,
                               harness.provider.forge, harness.provider)
    # One reconciledAt: the health's change time orders the two (cluster_status_store).
    for health, changed in (("Progressing", "2024-03-05T07:33:04Z"),
                            ("Healthy", "2024-03-05T07:35:00Z")):
        row = from_application(application("fraud-detector", "production", "gpu-eu-1",
                                           health=health, health_changed_at=changed))
        assert row is not None
        feedback.observe("fraud-detector", "production", [row], complete=True, actor="test")
    slug = NOTE_HEADING.lower().replace(" ", "-")
    (note,) = bot_notes(harness, iid, slug)
    assert "healthy" in note.splitlines()[3] and "progressing" not in note.lower()
    assert not feedback.observe("fraud-detector", "production", [row], complete=True,
                                actor="test").deployed      # synced and healthy, not merged
    harness.approve(iid, "alice")
    harness.approve(iid, "bob")
    if harness.provider.get(iid).state != "merged":
        harness.merge(iid, opened.head_sha)
    merged = harness.provider.get(iid)
    assert merged.state == "merged"
    at_merge = from_application(application("fraud-detector", "production", "gpu-eu-1",
                                             revision=merged.merge_commit_sha or ""))
    assert at_merge is not None
    assert feedback.observe("fraud-detector", "production", [at_merge], complete=True,
                            actor="test").deployed


def test_deployed_when_each_cluster_synced_a_revision_containing_the_merge(
        harness: Harness, tmp_path: Path) -> None:
    """Another model's merge moves the branch between the two clusters' syncs: each cluster
    reports the HEAD it compared with, and both contain this MR's merge commit."""
    forge = harness.provider.forge
    before = forge.branch_head("main")
    assert before
    opened = harness.provider.propose(proposal("7"))
    iid = opened.mr_iid
    assert iid is not None
    for reviewer in ("alice", "bob"):
        harness.approve(iid, reviewer)
    if harness.provider.get(iid).state != "merged":
        harness.merge(iid, opened.head_sha)
    merge_commit = harness.provider.get(iid).merge_commit_sha
    assert merge_commit
    later = harness.human_commit("main", "README.md", "# GitOps, with another model\n")
    assert forge.is_ancestor(merge_commit, merge_commit)
    assert forge.is_ancestor(merge_commit, later)
    assert not forge.is_ancestor(later, merge_commit)
    assert not forge.is_ancestor(merge_commit, before)
    assert not forge.is_ancestor(merge_commit, "f" * 40)       # a revision the repo never had

    ledger = StateLedger(tmp_path / "state")
    ledger.put(DeployedState("Fraud Detector", "production", "fraud-detector", "7", "merged",
                             iid, opened.head_sha))
    feedback = ClusterFeedback(StatusStore(tmp_path / "state"), ledger,
                               AuditTrail(tmp_path / "state"), None, forge, harness.provider)

    def observe(cluster: str, revision: str) -> bool:
        row = from_application(application("fraud-detector", "production", cluster,
                                            revision=revision))
        assert row is not None
        return feedback.observe("fraud-detector", "production", [row], complete=False,
                                actor="test").deployed

    assert observe("gpu-eu-1", merge_commit)
    assert observe("gpu-us-1", later)
    assert not observe("gpu-us-1", before)   # a revision without the change is not deployed


def test_deployed_after_a_fast_forward_merge_with_squash(tmp_path: Path) -> None:
    """GitLab's fast-forward merge method with squash: no merge commit (merge_commit_sha
    null); the squash commit (squash_commit_sha) is what lands on main, and the MR's head is
    on no revision of main at all."""
    standin = make_standin(tmp_path, per_page=2)
    try:
        harness = GitLabHarness(standin, tmp_path)
        standin.squash_merges = True
        opened = harness.provider.propose(proposal("7"))
        iid = opened.mr_iid
        assert iid is not None and opened.head_sha
        for reviewer in ("alice", "bob"):
            harness.approve(iid, reviewer)
        if harness.provider.get(iid).state != "merged":
            harness.merge(iid, opened.head_sha)
        squashed = standin.repo.head("main")
        assert squashed and standin.project.mrs[iid].merge_commit_sha is None
        forge = harness.provider.forge
        assert not forge.is_ancestor(opened.head_sha, squashed)
        later = harness.human_commit("main", "README.md", "# GitOps, with another model\n")

        ledger = StateLedger(tmp_path / "state")
        ledger.put(DeployedState("Fraud Detector", "production", "fraud-detector", "7",
                                 "merged", iid, opened.head_sha))
        feedback = ClusterFeedback(StatusStore(tmp_path / "state"), ledger,
                                   AuditTrail(tmp_path / "state"), None, forge,
                                   harness.provider)
        rows = [from_application(application("fraud-detector", "production", cluster,
                                             revision=revision))
                for cluster, revision in (("gpu-eu-1", squashed), ("gpu-us-1", later))]
        assert all(rows)
        assert feedback.observe("fraud-detector", "production", [r for r in rows if r],
                                complete=True, actor="test").deployed
    finally:
        standin.stop()
