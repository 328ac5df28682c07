"""GitLab editions and versions: what each answers, and promoter working on all of them.

The stand-in's profiles (tests/gitlab/standin/state.py) follow lib/api/merge_requests.rb of
two eras and the CE/EE approval entities; tests/gitlab/recorded/PROVENANCE.md names them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gitlab
import pytest

from promoter.errors import PermanentError, TransientError
from promoter.ports.git import Outcome
from tests.gitlab.conftest import GitLabHarness, bot_notes, make_standin, proposal
from tests.gitlab.standin.server import StandIn
from tests.gitlab.standin.state import PROFILES

ALL = list(PROFILES)


@pytest.fixture(params=ALL)
def profiled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StandIn]:
    server = make_standin(tmp_path, per_page=2, profile=request.param)
    yield server
    server.stop()


def _standin(tmp_path: Path, profile: str) -> StandIn:
    return make_standin(tmp_path, per_page=2, profile=profile)


# --- what each profile answers to PUT …/merge (python-gitlab, raw HTTP) ----------------------

def _open_mr(standin: StandIn, *, rule: int = 0, checking: int = 0,
             pipeline: str | None = None) -> tuple[Any, int, str]:
    """An MR of branch ``feature`` as the bot opens it; returns (client, iid, head)."""
    client = gitlab.Gitlab(standin.base_url, private_token="bot-token", timeout=10)
    project = client.projects.get("group/gitops")
    head = project.commits.create({"branch": "feature", "start_branch": "main",
                                   "commit_message": "Add a", "actions": [
                                       {"action": "create", "file_path": "a.md",
                                        "content": "a\n"}]}).id
    standin.checking_reads = checking
    mr = project.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                       "title": "Add a"})
    if rule:
        mr.approval_rules.create({"name": "promoter", "approvals_required": rule})
    if pipeline:
        standin.api.run_pipeline(mr.iid, pipeline)
    return client, mr.iid, str(head)


def _put_merge(client: Any, iid: int, **data: Any) -> int:
    try:
        client.http_put(f"/projects/42/merge_requests/{iid}/merge", post_data=data)
    except gitlab.GitlabError as exc:
        return exc.response_code or 0
    return 200


# While GitLab still checks mergeability and no pipeline runs: a plain merge (or one with a
# stale SHA: every era checks the SHA after mergeability), then an auto-merge.
CHECKING_PLAIN = {"ee-legacy": 406, "ee-pre17": 422, "ce-pre17": 422, "ee-17": 422,
                  "ce-17": 422}
CHECKING_AUTO = {"ee-legacy": 406, "ee-pre17": 405, "ce-pre17": 405, "ee-17": 200,
                 "ce-17": 200}
ERAS = [*ALL, "ee-legacy"]


@pytest.mark.parametrize("profile", ERAS)
def test_merge_refusals_while_checking_follow_the_version(tmp_path: Path, profile: str) -> None:
    standin = _standin(tmp_path, profile)
    try:
        client, iid, head = _open_mr(standin, checking=100)
        assert _put_merge(client, iid, sha=head) == CHECKING_PLAIN[profile]
        assert _put_merge(client, iid, sha="0" * 40) == CHECKING_PLAIN[profile]
        assert _put_merge(client, iid, auto_merge=True, sha=head) == CHECKING_AUTO[profile]
        # 17+ accepts auto-merge now and merges once the check is done; the others refuse.
        assert standin.project.mrs[iid].auto_merge is (CHECKING_AUTO[profile] == 200)
        assert standin.project.mrs[iid].state == "opened"
    finally:
        standin.stop()


@pytest.mark.parametrize("profile", ERAS)
def test_a_stale_sha_on_a_mergeable_mr_is_409(tmp_path: Path, profile: str) -> None:
    standin = _standin(tmp_path, profile)
    try:
        client, iid, head = _open_mr(standin)
        assert _put_merge(client, iid, sha="0" * 40) == 409
        assert _put_merge(client, iid, sha=head) == 200
        assert standin.project.mrs[iid].state == "merged"
    finally:
        standin.stop()


@pytest.mark.parametrize("profile", ERAS)
def test_a_closed_mr_is_refused_with_405(tmp_path: Path, profile: str) -> None:
    standin = _standin(tmp_path, profile)
    try:
        client, iid, head = _open_mr(standin)
        client.http_put(f"/projects/42/merge_requests/{iid}", post_data={"state_event": "close"})
        assert _put_merge(client, iid, sha=head) == 405
        assert _put_merge(client, iid, auto_merge=True, sha=head) == 405
    finally:
        standin.stop()


@pytest.mark.parametrize("profile", ["ee-pre17", "ee-17"])
def test_auto_merge_of_an_unapproved_mr_needs_17_or_the_approvals(tmp_path: Path,
                                                                  profile: str) -> None:
    standin = _standin(tmp_path, profile)
    try:
        client, iid, head = _open_mr(standin, rule=1)
        status = _put_merge(client, iid, auto_merge=True, sha=head)
        assert status == (405 if profile == "ee-pre17" else 200)
        assert standin.project.mrs[iid].auto_merge is (status == 200)
        standin.api.run_pipeline(iid, "running")
        # Before 17 a running pipeline is not enough: mergeable? wants the approvals (422).
        status = _put_merge(client, iid, merge_when_pipeline_succeeds=True, sha=head)
        assert status == (422 if profile == "ee-pre17" else 200)
        client.projects.get("group/gitops", lazy=True).mergerequests.get(
            iid, lazy=True).approve()
        assert _put_merge(client, iid, merge_when_pipeline_succeeds=True, sha=head) == 200
        assert standin.project.mrs[iid].auto_merge and standin.project.mrs[iid].state == "opened"
    finally:
        standin.stop()


# Auto-merge asked for an unapproved MR whose pipeline already passed: every era refuses (17:
# immediately mergeable, so MergeService runs, refuses the MR and the route answers 422), and
# nothing is merged or set; once approved, the same request merges it at once.
PASSED_UNAPPROVED = {"ee-legacy": 406, "ee-pre17": 422, "ee-17": 422}


@pytest.mark.parametrize("profile", list(PASSED_UNAPPROVED))
def test_auto_merge_after_the_pipeline_passed_needs_the_approvals(tmp_path: Path,
                                                                  profile: str) -> None:
    standin = _standin(tmp_path, profile)
    try:
        client, iid, head = _open_mr(standin, rule=1, pipeline="success")
        for flag in ("auto_merge", "merge_when_pipeline_succeeds"):
            assert _put_merge(client, iid, sha=head, **{flag: True}) == \
                PASSED_UNAPPROVED[profile]
        mr = standin.project.mrs[iid]
        assert (mr.state, mr.auto_merge, standin.repo.count("main")) == ("opened", False, 1)
        client.projects.get("group/gitops", lazy=True).mergerequests.get(
            iid, lazy=True).approve()
        assert _put_merge(client, iid, auto_merge=True, sha=head) == 200
        assert mr.state == "merged" and mr.merge_commit_sha == standin.repo.head("main")
    finally:
        standin.stop()


def test_a_token_that_may_not_merge_gets_401(profiled: StandIn) -> None:
    client, iid, head = _open_mr(profiled)
    profiled.cannot_merge.add("promoter-bot")
    assert _put_merge(client, iid, sha=head) == 401
    assert _put_merge(client, iid, auto_merge=True, sha=head) == 401


def test_approval_rules_do_not_exist_on_ce(tmp_path: Path) -> None:
    standin = _standin(tmp_path, "ce-17")
    try:
        client, iid, _ = _open_mr(standin)
        mr = client.projects.get("group/gitops").mergerequests.get(iid, lazy=True)
        with pytest.raises(gitlab.GitlabError) as raised:
            mr.approval_rules.list()
        assert (raised.value.response_code, raised.value.error_message) == (404, "404 Not Found")
        approvals = client.http_get(f"/projects/42/merge_requests/{iid}/approvals")
        assert set(approvals) == {"user_has_approved", "user_can_approve", "approved",
                                  "approved_by"}
    finally:
        standin.stop()


def test_approvals_add_up_over_several_rules(tmp_path: Path) -> None:
    standin = _standin(tmp_path, "ee-17")
    try:
        client, iid, head = _open_mr(standin, rule=2)
        mr = client.projects.get("group/gitops", lazy=True).mergerequests.get(iid, lazy=True)
        mr.approval_rules.create({"name": "security", "approvals_required": 1})
        gitlab.Gitlab(standin.base_url, private_token="alice-token").projects.get(
            "group/gitops", lazy=True).mergerequests.get(iid, lazy=True).approve()
        approvals = client.http_get(f"/projects/42/merge_requests/{iid}/approvals")
        assert (approvals["approvals_required"], approvals["approvals_left"]) == (3, 1)
        assert approvals["approved"] is False
        assert _put_merge(client, iid, sha=head) == 422      # still one approval short
    finally:
        standin.stop()


# --- promoter on every profile -----------------------------------------------------------

@pytest.mark.parametrize("profile", ERAS)
def test_auto_merge_waits_out_the_check_on_every_profile(tmp_path: Path, profile: str) -> None:
    standin = _standin(tmp_path, profile)
    standin.checking_reads = 2           # the new MR reads "checking" twice
    standin.new_mr_pipeline = "running"  # before 17, auto-merge needs a running pipeline
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", auto_merge=True, approvals_required=0))
        assert result.warnings == () and result.mr_iid is not None
        assert standin.project.mrs[result.mr_iid].auto_merge
        puts = [p for m, p in standin.requests if m == "PUT" and p.endswith("/merge")]
        # 17+ accepts at once; older eras refuse while checking and promoter asks again.
        assert len(puts) == (1 if profile.endswith("-17") else 1 + 2)
        standin.api.run_pipeline(result.mr_iid, "success")
        merged = _read_until_merged(harness, result.mr_iid)
        assert merged.merge_commit_sha == standin.repo.head("main")
        assert standin.repo.count("main") == 3       # initial, promoter's commit, the merge
    finally:
        standin.stop()


def _read_until_merged(harness: GitLabHarness, iid: int) -> Any:
    """GitLab merges in the background once checks pass: read as a user would, a few times."""
    for _ in range(5):
        found = harness.provider.get(iid)
        if found.state == "merged":
            return found
    raise AssertionError(f"!{iid} was not merged: {found.state}")


def test_get_and_auto_merge_work_on_ce(tmp_path: Path) -> None:
    standin = _standin(tmp_path, "ce-17")
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1"))
        assert result.mr_iid is not None and not result.approvals_enforced
        harness.approve(result.mr_iid, "alice")
        mr = harness.provider.get(result.mr_iid)
        assert (mr.approvals_required, mr.approved_by) == (2, ("alice",))   # stated in the MR
        standin.project.mrs[result.mr_iid].checking_left = 2   # the push is being checked
        # An environment that requires no approvals: nothing for auto-merge to bypass.
        again = harness.provider.propose(proposal("2", auto_merge=True, approvals_required=0))
        assert again.outcome is Outcome.UPDATED
        assert [w for w in again.warnings if "auto-merge" in w] == []
        merged = _read_until_merged(harness, result.mr_iid)   # merged once the check is done
        assert merged.state == "merged" and merged.merge_commit_sha == standin.repo.head("main")
    finally:
        standin.stop()


@pytest.mark.parametrize("profile", ["ce-17", "ce-pre17"])
def test_on_ce_required_approvals_are_never_bypassed_by_auto_merge(tmp_path: Path,
                                                                  profile: str) -> None:
    """Free cannot enforce the count, so auto-merge would merge with no approval at all."""
    standin = _standin(tmp_path, profile)
    standin.new_mr_pipeline = "running"          # something for auto-merge to wait for
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", auto_merge=True))   # 2 required
        assert result.mr_iid is not None and not result.approvals_enforced
        assert not standin.project.mrs[result.mr_iid].auto_merge
        assert not [p for m, p in standin.requests if m == "PUT" and p.endswith("/merge")]
        withheld = [w for w in result.warnings if w.startswith("auto-merge not set")]
        assert withheld == [f"auto-merge not set on !{result.mr_iid}: GitLab would merge it "
                            "once the pipeline passes without the 2 approval(s) production "
                            "requires, since it does not enforce them (GitLab Premium "
                            "approval rules do); use Premium approval rules, or set "
                            "environments.production.auto_merge: false or approvals: 0"]
        (note,) = bot_notes(harness, result.mr_iid, "promoter:-approvals")
        assert "Auto-merge is **not** set" in note and "auto_merge: false" in note
        standin.api.run_pipeline(result.mr_iid, "success")
        assert harness.provider.get(result.mr_iid).state == "opened"   # waits for reviewers
    finally:
        standin.stop()


def test_on_ce_only_promoters_own_comment_states_the_count(tmp_path: Path) -> None:
    standin = _standin(tmp_path, "ce-17")
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1"))
        assert result.mr_iid is not None
        bot_note = next(n for n in standin.project.mrs[result.mr_iid].notes
                        if "requires **2**" in n["body"])
        forged = bot_note["body"].replace("**2**", "**0**")
        mr = harness.as_user("alice-token").mergerequests.get(result.mr_iid, lazy=True)
        mr.notes.create({"body": forged})               # newest first: read before the bot's
        assert harness.provider.get(result.mr_iid).approvals_required == 2
    finally:
        standin.stop()


def test_a_moved_head_at_auto_merge_is_looked_at_again(profiled: StandIn,
                                                       tmp_path: Path) -> None:
    profiled.new_mr_pipeline = "running"      # something for auto-merge to wait for
    harness = GitLabHarness(profiled, tmp_path)
    result = harness.provider.propose(proposal("1", approvals_required=0))
    assert result.mr_iid is not None
    forge = harness.provider.forge   # type: ignore[attr-defined]
    with pytest.raises(TransientError, match="409"):   # the flow retries and looks again
        forge.auto_merge(result.mr_iid, "0" * 40)
    assert profiled.project.mrs[result.mr_iid].state == "opened"


@pytest.mark.parametrize("profile", ["ee-pre17", "ee-17"])
def test_auto_merge_of_an_unapproved_mr_by_version(tmp_path: Path, profile: str) -> None:
    standin = _standin(tmp_path, profile)
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", auto_merge=True, approvals_required=1))
        assert result.mr_iid is not None
        # The project leaves MR approval rules editable (GitLab's default): said apart.
        auto_merge_warnings = tuple(w for w in result.warnings if "auto-merge" in w)
        if profile == "ee-pre17":
            assert auto_merge_warnings == (
                f"auto-merge not set on !{result.mr_iid}: the MR needs its approvals first "
                "(GitLab sets auto-merge on an unapproved MR only while its pipeline has not "
                "passed yet, and before 17 not at all): merge it once approved",)
            assert not standin.project.mrs[result.mr_iid].auto_merge
            return
        assert auto_merge_warnings == () and standin.project.mrs[result.mr_iid].auto_merge
        harness.approve(result.mr_iid, "alice")       # the approval completes: GitLab merges
        assert harness.provider.get(result.mr_iid).state == "merged"
    finally:
        standin.stop()


def test_auto_merge_with_nothing_to_wait_for_says_so(profiled: StandIn,
                                                      tmp_path: Path) -> None:
    result = GitLabHarness(profiled, tmp_path).provider.propose(
        proposal("1", auto_merge=True, approvals_required=0))   # mergeable, no pipeline
    assert result.mr_iid is not None
    assert result.warnings == (f"auto-merge not set on !{result.mr_iid}: no pipeline is running "
                               "for auto-merge to wait for; merge it once reviewed, or let CI "
                               "run a pipeline",)
    assert profiled.project.mrs[result.mr_iid].state == "opened"


def test_a_token_without_merge_rights_is_named_as_such(profiled: StandIn,
                                                       tmp_path: Path) -> None:
    profiled.cannot_merge.add("promoter-bot")
    result = GitLabHarness(profiled, tmp_path).provider.propose(
        proposal("1", auto_merge=True, approvals_required=0))
    assert result.outcome is Outcome.CREATED and len(result.warnings) == 1
    assert "401" in result.warnings[0] and "may not merge" in result.warnings[0]
    assert "approv" not in result.warnings[0]


def test_auto_merge_on_a_closed_mr_says_it_is_closed(profiled: StandIn, tmp_path: Path) -> None:
    harness = GitLabHarness(profiled, tmp_path)
    result = harness.provider.propose(proposal("1", approvals_required=0))
    assert result.mr_iid is not None and result.head_sha is not None
    harness.human_close(result.mr_iid)
    forge = harness.provider.forge   # type: ignore[attr-defined]
    warning = forge.auto_merge(result.mr_iid, result.head_sha)
    assert warning == f"auto-merge not set on !{result.mr_iid}: the MR is closed"


def test_a_merge_in_progress_is_waited_out(profiled: StandIn, tmp_path: Path) -> None:
    harness = GitLabHarness(profiled, tmp_path)
    first = harness.provider.propose(proposal("1", approvals_required=0))
    assert first.mr_iid is not None
    profiled.api.start_merge(first.mr_iid, reads=2)   # GitLab shows "locked" while merging
    assert profiled.project.mr_json(profiled.project.mrs[first.mr_iid])["state"] == "locked"
    commits = profiled.commits_created

    again = harness.provider.propose(proposal("1"))

    assert again.outcome is Outcome.UNCHANGED and again.mr_iid == first.mr_iid
    assert harness.provider.get(first.mr_iid).state == "merged"
    assert profiled.commits_created == commits and len(profiled.project.mrs) == 1


def test_a_merge_that_stays_locked_is_left_for_a_retry(standin: StandIn, tmp_path: Path) -> None:
    harness = GitLabHarness(standin, tmp_path)
    first = harness.provider.propose(proposal("1", approvals_required=0))
    assert first.mr_iid is not None
    standin.api.start_merge(first.mr_iid, reads=10_000)
    with pytest.raises(TransientError, match="being merged"):
        harness.provider.propose(proposal("1"))
    assert len(standin.project.mrs) == 1 and standin.commits_created == 1


def test_auto_merge_while_gitlab_merges_is_not_a_warning(profiled: StandIn,
                                                         tmp_path: Path) -> None:
    harness = GitLabHarness(profiled, tmp_path)
    result = harness.provider.propose(proposal("1", approvals_required=0))
    assert result.mr_iid is not None and result.head_sha is not None
    profiled.api.start_merge(result.mr_iid, reads=5)
    forge = harness.provider.forge   # type: ignore[attr-defined]
    assert forge.auto_merge(result.mr_iid, result.head_sha) is None


def test_a_directory_clash_is_permanent_not_retried(standin: StandIn, tmp_path: Path) -> None:
    standin.repo.commit_actions("main", standin.repo.head("main"), [
        {"action": "create", "file_path": "extra/notes.md/old.txt", "content": "x\n"}],
        "A directory where promoter wants a file\n")
    files = {**proposal("1").files, "extra/notes.md": "notes\n"}
    harness = GitLabHarness(standin, tmp_path)
    with pytest.raises(PermanentError, match="directory with this name already exists") as raised:
        harness.provider.propose(proposal("1", files=files))
    assert "directory" in (raised.value.hint or "")
    posts = [p for m, p in standin.requests if m == "POST" and p.endswith("/repository/commits")]
    assert len(posts) == 1 and standin.commits_created == 0 and not standin.project.mrs
