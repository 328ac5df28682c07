"""Auto-merge around a pipeline that has already passed (GitLab Premium, every merge API era).

GitLab 17 sets auto-merge on an unapproved MR while its pipeline runs; asked once the pipeline
has passed it tries to merge at once and refuses an unapproved MR with 422, setting nothing
(tests/gitlab/recorded/PROVENANCE.md, "Merge route eras"). Older GitLab refuses it either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.ports.git import Outcome
from tests.gitlab.conftest import GitLabHarness, make_standin, proposal
from tests.gitlab.standin.server import StandIn


def _strict(standin: StandIn) -> StandIn:
    """A project whose settings leave promoter nothing to warn about: approvals reset on push,
    MR rules not editable, a project rule requiring the environment's 2 approvals."""
    standin.project.approval_settings["disable_overriding_approvers_per_merge_request"] = True
    standin.project.approval_rules.append({
        "id": 7, "name": "production", "approvals_required": 2, "rule_type": "regular",
        "users": [], "groups": [], "eligible_approvers": [], "source_rule": None,
        "contains_hidden_groups": False, "overridden": False})
    return standin


@pytest.fixture
def gitlab17(tmp_path: Path) -> Iterator[StandIn]:
    server = _strict(make_standin(tmp_path, profile="ee-17"))
    yield server
    server.stop()


def _merge_puts(standin: StandIn) -> int:
    return sum(1 for method, path in standin.requests
               if method == "PUT" and path.endswith("/merge"))


def test_a_rerun_after_the_pipeline_passed_leaves_the_auto_merge_set(gitlab17: StandIn,
                                                                      tmp_path: Path) -> None:
    gitlab17.new_mr_pipeline = "running"
    harness = GitLabHarness(gitlab17, tmp_path)
    first = harness.provider.propose(proposal("1", auto_merge=True))   # 2 approvals required
    assert first.mr_iid is not None and first.warnings == ()
    mr = gitlab17.project.mrs[first.mr_iid]
    assert mr.auto_merge and _merge_puts(gitlab17) == 1   # 17: set while the pipeline runs
    gitlab17.api.run_pipeline(first.mr_iid, "success")    # CI passes; nobody approved yet
    assert (mr.state, mr.auto_merge) == ("opened", True)

    again = harness.provider.propose(proposal("1", auto_merge=True))   # the same version
    # Asked again now, GitLab 17 would try to merge at once and refuse (422): not asked.
    assert again.outcome is Outcome.UNCHANGED and again.warnings == ()
    assert _merge_puts(gitlab17) == 1
    assert (mr.state, mr.auto_merge) == ("opened", True)
    assert gitlab17.repo.count("main") == 1

    harness.approve(first.mr_iid, "alice")
    assert harness.provider.get(first.mr_iid).state == "opened"     # one approval of two
    harness.approve(first.mr_iid, "bob")                # the auto-merge set in run 1 merges
    merged = harness.provider.get(first.mr_iid)
    assert merged.state == "merged" and merged.merge_commit_sha == gitlab17.repo.head("main")


NOT_APPROVED = ("the MR needs its approvals first (GitLab sets auto-merge on an unapproved MR "
                "only while its pipeline has not passed yet, and before 17 not at all): merge "
                "it once approved")


@pytest.mark.parametrize("profile", ["ee-17", "ee-pre17", "ee-legacy"])
def test_auto_merge_asked_after_the_pipeline_passed_says_why_it_is_not_set(
        tmp_path: Path, profile: str) -> None:
    standin = _strict(make_standin(tmp_path, profile=profile))
    standin.new_mr_pipeline = "success"       # CI was faster than promoter
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", auto_merge=True))
        assert result.mr_iid is not None
        assert result.warnings == (f"auto-merge not set on !{result.mr_iid}: {NOT_APPROVED}",)
        mr = standin.project.mrs[result.mr_iid]
        assert (mr.state, mr.auto_merge, standin.repo.count("main")) == ("opened", False, 1)
        # Not set, so a later job asks again, and says the same.
        again = harness.provider.propose(proposal("1", auto_merge=True))
        assert again.warnings == result.warnings and _merge_puts(standin) == 2
        harness.approve(result.mr_iid, "alice")
        harness.approve(result.mr_iid, "bob")
        assert harness.provider.get(result.mr_iid).state == "opened"   # a reviewer merges it
    finally:
        standin.stop()
