"""The MR lifecycle as a user sees it, on GitLab (stand-in) and on the local provider alike."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from promoter.ports.git import Outcome
from tests.gitlab import trees
from tests.gitlab.conftest import ENV, NAME, Harness, bot_notes, proposal

BRANCH = f"promote/{NAME}/{ENV}"
OVERLAY = f"manifests/{NAME}/overlays/{ENV}/"


def open_mrs(harness: Harness) -> list[Any]:
    return [mr for mr in harness.mrs() if mr.state == "opened"]


def test_first_promotion_opens_one_mr_with_one_commit(harness: Harness) -> None:
    result = harness.provider.propose(proposal("1"))

    assert result.outcome is Outcome.CREATED and result.commit_created
    mr = result.merge_request
    assert mr is not None and mr.source_branch == BRANCH and mr.target_branch == "main"
    assert mr.version == "1" and set(mr.labels) == {"promoter", f"env::{ENV}"}
    assert harness.commits(BRANCH) == 2          # the initial commit + promoter's one commit
    assert harness.commits("main") == 1          # nothing lands before review
    assert result.head_sha == harness.provider.get(mr.iid).head_sha
    assert len(bot_notes(harness, mr.iid, "promoter:-status")) == 1
    assert result.changed_paths == tuple(sorted(proposal("1").files))
    description = harness.provider.get(mr.iid).description
    assert "### What changes" in description and "- create: 5 file(s)" in description


def test_same_version_again_changes_nothing(harness: Harness) -> None:
    first = harness.provider.propose(proposal("1"))
    commits = harness.commits()

    again = harness.provider.propose(proposal("1"))

    assert again.outcome is Outcome.UNCHANGED and not again.commit_created
    assert again.mr_iid == first.mr_iid and again.head_sha == first.head_sha
    assert harness.commits() == commits and len(harness.mrs()) == 1
    assert first.mr_iid is not None
    assert len(bot_notes(harness, first.mr_iid, "promoter:-status")) == 1


def test_newer_version_updates_the_open_mr(harness: Harness) -> None:
    first = harness.provider.propose(proposal("1"))
    newer = harness.provider.propose(proposal("2"))

    assert newer.outcome is Outcome.UPDATED and newer.commit_created
    assert newer.mr_iid == first.mr_iid and len(open_mrs(harness)) == 1
    assert newer.merge_request is not None and newer.merge_request.version == "2"
    assert harness.commits(BRANCH) == 2          # still one commit on top of main
    assert first.mr_iid is not None
    notes = bot_notes(harness, first.mr_iid, "promoter:-status")
    assert len(notes) == 1 and "version 2 proposed" in notes[0]   # edited in place


def test_newer_version_supersedes_when_configured(make_harness: Any) -> None:
    harness = make_harness(supersede=True)
    first = harness.provider.propose(proposal("1"))
    newer = harness.provider.propose(proposal("2"))

    assert newer.outcome is Outcome.SUPERSEDED and newer.superseded_iid == first.mr_iid
    assert newer.mr_iid != first.mr_iid and len(open_mrs(harness)) == 1
    old = harness.provider.get(first.mr_iid)
    assert old.state == "closed" and old.title.endswith(" - superseded")
    closing = bot_notes(harness, first.mr_iid, "promoter:-superseded")
    assert len(closing) == 1 and f"!{newer.mr_iid}" in closing[0]
    assert harness.commits(BRANCH) == 2


def test_a_hostile_name_at_length_still_opens_and_supersedes_within_gitlabs_title_limit(
        make_harness: Any) -> None:
    """The stand-in refuses titles over 255 characters as GitLab does: the model part is
    capped after making it inert, leaving room for the retitle of a superseded MR."""
    from promoter.core.mr_text import MrFacts, title

    model = "R&D & QA & Ops: churn #2 & " * 5
    harness = make_harness(supersede=True)

    def titled(version: str) -> Any:
        return proposal(version, model=model, title=title(MrFacts(
            model=model, version=version, env=ENV, name=NAME)))

    first = harness.provider.propose(titled("1"))
    newer = harness.provider.propose(titled("2"))
    assert newer.outcome is Outcome.SUPERSEDED and first.mr_iid is not None
    old = harness.provider.get(first.mr_iid)
    assert old.state == "closed" and old.title.endswith(" - superseded")
    assert len(old.title) <= 255


def test_a_human_close_is_respected_for_that_version(harness: Harness) -> None:
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None
    harness.human_close(first.mr_iid)
    commits = harness.commits()

    again = harness.provider.propose(proposal("1"))

    assert again.outcome is Outcome.CLOSED_BY_HUMAN and again.mr_iid == first.mr_iid
    assert harness.provider.get(first.mr_iid).state == "closed"
    assert not open_mrs(harness) and harness.commits() == commits

    newer = harness.provider.propose(proposal("2"))        # a new version is a new question
    assert newer.outcome is Outcome.CREATED and newer.mr_iid != first.mr_iid


def test_a_version_asked_for_again_is_proposed_over_a_human_close(harness: Harness) -> None:
    """`promoter rollback` run again after a reviewer closed its MR: a person asks for that
    version now, so a new MR proposes it (before, the close was reported as the result and
    nothing was proposed)."""
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None
    harness.human_close(first.mr_iid)

    again = harness.provider.propose(proposal("1", repropose=True))

    assert again.outcome is Outcome.CREATED and again.mr_iid != first.mr_iid
    [mr] = open_mrs(harness)
    assert mr.iid == again.mr_iid and mr.version == "1"
    assert harness.provider.get(first.mr_iid).state == "closed"


def test_human_commits_are_reported_not_overwritten(harness: Harness) -> None:
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None
    human = harness.human_commit(BRANCH, OVERLAY + "replicas.yaml",
                                 trees.REPLICAS.format(name=NAME, replicas=9))

    for _ in range(2):
        result = harness.provider.propose(proposal("2"))
        assert result.outcome is Outcome.HUMAN_COMMITS and not result.commit_created
        assert result.head_sha == human

    assert harness.provider.get(first.mr_iid).head_sha == human   # their commit stays
    assert len(bot_notes(harness, first.mr_iid, "promoter:-branch-changed-by-someone-else")) == 1


def test_another_model_with_the_same_deployment_name_does_not_take_over_the_mr(
        harness: Harness) -> None:
    """Two registered models whose names derive one deployment name, promoted for the first
    time at once: both pass the name check before either is on the target branch. The second
    must not replace the first's commit (the key trailer alone is the same for both)."""
    from promoter.errors import PermanentError

    first = harness.provider.propose(proposal("1"))
    with pytest.raises(PermanentError, match=r"holds promoter's proposal of model .* both "
                                             r"models derive the deployment name"):
        harness.provider.propose(proposal("1", model="Someone Else's " + proposal().model))
    assert harness.provider.get(first.mr_iid or 0).head_sha == first.head_sha
    assert harness.provider.propose(proposal("2")).outcome is Outcome.UPDATED


def test_target_already_holding_the_files_needs_no_mr(harness: Harness) -> None:
    first = harness.provider.propose(proposal("1", approvals_required=1))
    assert first.mr_iid is not None and first.head_sha is not None
    harness.approve(first.mr_iid, "alice")
    harness.merge(first.mr_iid, first.head_sha)

    again = harness.provider.propose(proposal("1"))

    assert again.outcome is Outcome.UNCHANGED and not again.commit_created
    assert not open_mrs(harness)


def test_merge_needs_the_required_approvals(harness: Harness) -> None:
    result = harness.provider.propose(proposal("1"))
    assert result.mr_iid is not None
    harness.approve(result.mr_iid, "alice")
    if not harness.enforces_approvals:
        # GitLab CE/Free has no approval rules: the requirement is stated, not enforced.
        assert not result.approvals_enforced
        assert len(bot_notes(harness, result.mr_iid, "promoter:-approvals")) == 1
        assert "requires **2** approval(s)" in bot_notes(
            harness, result.mr_iid, "promoter:-approvals")[0]
        assert harness.provider.get(result.mr_iid).approvals_required == 2
        return
    assert result.approvals_enforced
    # GitLab: 422 "Branch cannot be merged" (406 before 14); local: names the approvals.
    with pytest.raises(Exception, match=r"(?i)approv|Branch cannot be merged"):
        harness.merge(result.mr_iid, result.head_sha)
    assert harness.provider.get(result.mr_iid).state == "opened"


@pytest.mark.e2e  # runs `python -m promoter validate` (real kustomize) as a process
def test_merged_tree_builds_and_validates(harness: Harness, tmp_path: Path) -> None:
    harness.provider.propose(proposal("1"))
    result = harness.provider.propose(proposal("2"))
    assert result.mr_iid is not None
    for reviewer in ("alice", "bob"):
        harness.approve(result.mr_iid, reviewer)
    harness.merge(result.mr_iid, result.head_sha)

    merged = harness.provider.get(result.mr_iid)
    assert merged.state == "merged" and merged.merge_commit_sha
    checkout = tmp_path / "merged"
    harness.export("main", checkout)
    for path, content in proposal("2").files.items():
        assert (checkout / path).read_text() == content
    validate(checkout)


def validate(checkout: Path) -> None:
    """`promoter validate` on the merged tree (real kustomize + schemas)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    done = subprocess.run([sys.executable, "-m", "promoter", "validate",
                           str(checkout / "manifests")], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    built = subprocess.run(["kubectl", "kustomize", str(checkout / OVERLAY)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    assert "replicas: 3" in built.stdout and "namespace: models-production" in built.stdout


def test_get_reports_approvals(make_harness: Any) -> None:
    harness = make_harness()
    result = harness.provider.propose(proposal("1"))
    harness.approve(result.mr_iid, "alice")
    mr = harness.provider.get(result.mr_iid)
    assert (mr.approvals_required, mr.approved_by) == (2, ("alice",))


def test_a_stale_branch_without_open_mr_is_rebuilt(harness: Harness) -> None:
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None
    harness.human_close(first.mr_iid)
    harness.human_commit(BRANCH, OVERLAY + "replicas.yaml",
                         trees.REPLICAS.format(name=NAME, replicas=5))

    newer = harness.provider.propose(proposal("2"))

    assert newer.outcome is Outcome.CREATED and newer.commit_created
    assert harness.commits(BRANCH) == 2 and len(open_mrs(harness)) == 1


def test_a_reviewers_label_survives_re_proposals(make_harness: Any) -> None:
    """GitLab's ``labels=`` replaces them all: promoter adds and removes only its own, and a
    label a reviewer put on the MR neither makes it out of date nor is taken away."""
    harness = make_harness()
    first = harness.provider.propose(proposal("1", labels=("promoter", f"env::{ENV}",
                                                           "team::risk")))
    assert first.mr_iid is not None
    harness.add_label(first.mr_iid, "do-not-merge")
    again = harness.provider.propose(proposal("1", labels=("promoter", f"env::{ENV}",
                                                           "team::risk")))
    assert again.outcome is Outcome.UNCHANGED or not again.commit_created
    assert sorted(harness.provider.get(first.mr_iid).labels) == sorted(
        ["promoter", f"env::{ENV}", "team::risk", "do-not-merge"])
    # The team changed: its label is replaced, the reviewer's stays.
    harness.provider.propose(proposal("2", labels=("promoter", f"env::{ENV}", "team::fraud")))
    assert sorted(harness.provider.get(first.mr_iid).labels) == sorted(
        ["promoter", f"env::{ENV}", "team::fraud", "do-not-merge"])


def test_an_open_mr_is_withdrawn_when_the_target_already_holds_the_proposal(
        harness: Harness) -> None:
    """Version 1 merged, version 2's MR open, then version 1 proposed again (its alias moved
    back): the target branch holds it already. Before, version 2's MR was returned as the
    proposal's and stayed open, so merging it deployed version 2 while every record said 1."""
    first = harness.provider.propose(proposal("1", approvals_required=1))
    assert first.mr_iid is not None and first.head_sha is not None
    harness.approve(first.mr_iid, "alice")
    harness.merge(first.mr_iid, first.head_sha)
    newer = harness.provider.propose(proposal("2"))
    assert newer.outcome is Outcome.CREATED and newer.mr_iid is not None

    back = harness.provider.propose(proposal("1"))

    assert back.outcome is Outcome.UNCHANGED and not back.commit_created
    assert back.merge_request is None and back.withdrawn_iid == newer.mr_iid
    closed = harness.provider.get(newer.mr_iid)
    assert closed.state == "closed" and closed.title.endswith(" - withdrawn")
    assert len(bot_notes(harness, newer.mr_iid, "promoter:-withdrawn")) == 1
    assert not open_mrs(harness) and harness.provider.paths(OVERLAY, BRANCH) is None
    again = harness.provider.propose(proposal("1"))          # nothing more to withdraw
    assert (again.outcome, again.withdrawn_iid) == (Outcome.UNCHANGED, None)
    # Withdrawn is not closed by a human: version 2 may be proposed again.
    assert harness.provider.propose(proposal("2")).outcome is Outcome.CREATED


def test_a_removal_withdraws_the_open_mr_adding_what_the_target_never_had(
        harness: Harness) -> None:
    """The environment's first promotion MR is open and its overlay is to go: the target has
    none, so the removal changes nothing, but the MR must not stay open to add it."""
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None

    removal = harness.provider.propose(proposal("1", files={}, managed_prefixes=(OVERLAY,),
                                                title="Decommission"))

    assert removal.outcome is Outcome.UNCHANGED and removal.merge_request is None
    assert removal.withdrawn_iid == first.mr_iid
    assert harness.provider.get(first.mr_iid).state == "closed"
    assert not open_mrs(harness)


def test_an_open_mr_of_someones_commits_is_reported_not_withdrawn(harness: Harness) -> None:
    """The target holds the proposal, and the open MR carries a human's commit: reported as
    ever, never closed with their work."""
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None
    human = harness.human_commit(BRANCH, OVERLAY + "replicas.yaml",
                                 trees.REPLICAS.format(name=NAME, replicas=9))

    removal = harness.provider.propose(proposal("1", files={}, managed_prefixes=(OVERLAY,)))

    assert removal.outcome is Outcome.HUMAN_COMMITS and removal.head_sha == human
    assert harness.provider.get(first.mr_iid).state == "opened"
