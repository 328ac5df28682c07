"""The project approval settings an approval rule depends on (GitLab Premium).

Approvals given for one version must not approve the next one pushed onto the same MR, and the
MR's rule must not be open to edits; promoter reads ``GET /projects/:id/approvals`` to know
whether GitLab sees to both, and says so (or acts) where it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.adapters.gitlab import APPROVAL_SETTINGS_TTL
from promoter.core.mr_text import note_slug
from promoter.core.proposal_notes import STALE_APPROVALS_MARKER
from promoter.ports.git import Outcome, ProposalResult
from tests.gitlab import trees
from tests.gitlab.conftest import (
    ENV,
    NAME,
    GitLabHarness,
    LocalHarness,
    bot_notes,
    make_standin,
    proposal,
)
from tests.gitlab.standin.server import StandIn
from tests.gitlab.test_auto_merge_after_ci import _merge_puts, _strict

SETTINGS_NOTE = "promoter:-approval-settings"


@pytest.fixture
def keeps_approvals(tmp_path: Path) -> Iterator[StandIn]:
    """A Premium project where approvals survive a push (reset_approvals_on_push off)."""
    server = make_standin(tmp_path, per_page=2, profile="ee-17")
    server.project.approval_settings["reset_approvals_on_push"] = False
    server.new_mr_pipeline = "running"       # something for auto-merge to wait for
    yield server
    server.stop()


def _approved_v1(harness: GitLabHarness) -> int:
    first = harness.provider.propose(proposal("1"))          # 2 approvals required
    assert first.mr_iid is not None
    harness.approve(first.mr_iid, "alice")
    harness.approve(first.mr_iid, "bob")
    return first.mr_iid


def _settings_reads(standin: StandIn) -> int:
    return sum(1 for method, path in standin.requests
               if method == "GET" and path.endswith("/approvals") and "merge_requests" not in path)


def test_approvals_for_an_older_version_are_withdrawn_with_a_bot_token(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    keeps_approvals.bot_users.add("promoter-bot")      # a project access token may reset
    harness = GitLabHarness(keeps_approvals, tmp_path)
    iid = _approved_v1(harness)
    second = harness.provider.propose(proposal("2", auto_merge=True))
    assert second.outcome is Outcome.UPDATED and second.mr_iid == iid
    mr = keeps_approvals.project.mrs[iid]
    assert mr.approved_by == [] and mr.state == "opened"   # version 2 needs its own approvals
    assert mr.auto_merge                                    # safe: nothing stale counts
    (note,) = bot_notes(harness, iid, SETTINGS_NOTE)
    assert "promoter withdrew the approvals given before" in note
    assert "`reset_approvals_on_push`" in note


def test_auto_merge_is_withheld_when_stale_approvals_cannot_be_withdrawn(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    harness = GitLabHarness(keeps_approvals, tmp_path)   # a personal token: reset is 401
    iid = _approved_v1(harness)
    second = harness.provider.propose(proposal("2", auto_merge=True))
    mr = keeps_approvals.project.mrs[iid]
    assert second.outcome is Outcome.UPDATED
    assert not mr.auto_merge and mr.state == "opened"
    assert f"auto-merge not set on !{iid}: approvals given for version 1 may still count for " \
        "version 2 and promoter could not withdraw them (that needs a project or group access " \
        "token); reviewers must approve it again" in second.warnings
    assert _settings_warning(second, iid)
    (note,) = bot_notes(harness, iid, SETTINGS_NOTE)
    assert "approvals given for version 1 do not approve version 2" in note
    keeps_approvals.api.run_pipeline(iid, "success")
    assert keeps_approvals.project.mrs[iid].state == "opened"   # nobody merged it

    again = harness.provider.propose(proposal("2", auto_merge=True))   # a later job
    assert again.outcome is Outcome.UNCHANGED and not keeps_approvals.project.mrs[iid].auto_merge
    assert not _settings_warning(again, iid)         # said once for this MR and version
    assert "do not approve version 2" in bot_notes(harness, iid, SETTINGS_NOTE)[0]


def test_a_pending_auto_merge_of_version_1_does_not_merge_version_2(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """Version 1 is approved while its auto-merge waits for the pipeline; version 2 is pushed
    in place and promoter cannot withdraw the approvals (a personal token). GitLab aborts an
    auto-merge when the branch gets a head other than the one it was set for, and promoter does
    not set it again: nobody merges version 2 on version 1's approvals."""
    harness = GitLabHarness(keeps_approvals, tmp_path)
    first = harness.provider.propose(proposal("1", auto_merge=True))
    assert first.mr_iid is not None
    iid = first.mr_iid
    assert keeps_approvals.project.mrs[iid].auto_merge      # waiting for the running pipeline
    harness.approve(iid, "alice")
    harness.approve(iid, "bob")
    assert keeps_approvals.project.mrs[iid].state == "opened"

    second = harness.provider.propose(proposal("2", auto_merge=True))
    assert second.outcome is Outcome.UPDATED and second.mr_iid == iid
    assert any(w.startswith(f"auto-merge not set on !{iid}: approvals given for version 1")
               for w in second.warnings)
    mr = keeps_approvals.project.mrs[iid]
    assert len(mr.approved_by) == 2 and not mr.auto_merge
    assert "aborted the automatic merge because the source branch was updated" in \
        harness.notes(iid)
    keeps_approvals.api.run_pipeline(iid, "success")
    assert keeps_approvals.project.mrs[iid].state == "opened"   # nobody merged version 2
    again = harness.provider.propose(proposal("2", auto_merge=True))   # a later job
    keeps_approvals.api.run_pipeline(iid, "success")
    assert again.outcome is Outcome.UNCHANGED
    assert keeps_approvals.project.mrs[iid].state == "opened"
    assert not keeps_approvals.project.mrs[iid].auto_merge


def test_auto_merge_is_not_set_again_after_promoter_pushes_the_same_version_anew(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """Version 1, approved while its auto-merge waits for the pipeline, pushed again with other
    content (its replicas changed): GitLab aborts the auto-merge set for the older head, and
    promoter does not set it again, since the approvals given for the older head still count:
    nobody merges the new content without looking at it."""
    harness = GitLabHarness(keeps_approvals, tmp_path)
    first = harness.provider.propose(proposal("1", auto_merge=True))
    assert first.mr_iid is not None and keeps_approvals.project.mrs[first.mr_iid].auto_merge
    iid = first.mr_iid
    harness.approve(iid, "alice")
    harness.approve(iid, "bob")
    again = harness.provider.propose(proposal(
        "1", auto_merge=True, description="Version 1 of Fraud Detector, rebuilt.",
        files=trees.rendered(NAME, ENV, "1", replicas=5)))
    assert again.outcome is Outcome.UPDATED and again.head_sha != first.head_sha
    mr = keeps_approvals.project.mrs[iid]
    assert len(mr.approved_by) == 2 and not mr.auto_merge
    assert f"auto-merge not set on !{iid}: reset_approvals_on_push is off and promoter pushed " \
        "a new head of version 1 onto this MR (new content, or its changes onto a newer " \
        "target branch), so approvals given before that push may still count for it; " \
        "reviewers must check the changes and merge it" in again.warnings
    (note,) = bot_notes(harness, iid, SETTINGS_NOTE)
    assert "promoter pushed a new head of version 1 here (new content, or its changes onto a " \
        "newer target branch); approvals given before that push may still count for it" in note
    assert "promoter does not set auto-merge" in note
    keeps_approvals.api.run_pipeline(iid, "success")
    assert keeps_approvals.project.mrs[iid].state == "opened"   # nobody merged the new content
    later = harness.provider.propose(proposal(                   # a later job
        "1", auto_merge=True, description="Version 1 of Fraud Detector, rebuilt.",
        files=trees.rendered(NAME, ENV, "1", replicas=5)))
    keeps_approvals.api.run_pipeline(iid, "success")
    assert later.outcome is Outcome.UNCHANGED
    assert keeps_approvals.project.mrs[iid].state == "opened"
    assert not keeps_approvals.project.mrs[iid].auto_merge


def _settings_warning(result: ProposalResult, iid: int) -> bool:
    return any(w.startswith(f"approvals on !{iid} can be bypassed") for w in result.warnings)


def test_editable_mr_rules_are_warned_about_once_per_mr(standin: StandIn,
                                                        tmp_path: Path) -> None:
    harness = GitLabHarness(standin, tmp_path)     # GitLab's defaults: MR rules editable
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None and _settings_warning(first, first.mr_iid)
    assert "`disable_overriding_approvers_per_merge_request`" in first.warnings[-1]
    assert "`reset_approvals_on_push`" not in first.warnings[-1]
    again = harness.provider.propose(proposal("1"))
    assert again.outcome is Outcome.UNCHANGED and not _settings_warning(again, first.mr_iid)
    assert _settings_reads(standin) == 1           # reused by the next jobs for a while
    (note,) = bot_notes(harness, first.mr_iid, SETTINGS_NOTE)
    assert "can lower its approval rule" in note


def test_approval_settings_are_read_again_after_a_while(standin: StandIn,
                                                        tmp_path: Path) -> None:
    """`serve` keeps one forge for its whole life: a maintainer's fix must be seen without a
    restart."""
    harness = GitLabHarness(standin, tmp_path)
    forge = harness.provider.forge
    now = [1000.0]
    forge.clock = lambda: now[0]
    assert forge.weak_approval_settings() == ("disable_overriding_approvers_per_merge_request",)
    standin.project.approval_settings["disable_overriding_approvers_per_merge_request"] = True
    now[0] += APPROVAL_SETTINGS_TTL - 1
    assert forge.weak_approval_settings() != ()    # still the earlier read
    now[0] += 1
    assert forge.weak_approval_settings() == ()
    assert _settings_reads(standin) == 2


def test_unreadable_settings_count_as_off(standin: StandIn, tmp_path: Path) -> None:
    standin.cannot_read_approval_settings.add("promoter-bot")   # 403 before GitLab 17
    result = GitLabHarness(standin, tmp_path).provider.propose(proposal("1"))
    assert result.mr_iid is not None and _settings_warning(result, result.mr_iid)
    assert "`reset_approvals_on_push` and `disable_overriding_approvers_per_merge_request`" \
        in result.warnings[-1]


def test_a_project_that_holds_its_rules_gets_no_warning(standin: StandIn,
                                                        tmp_path: Path) -> None:
    standin.project.approval_settings["disable_overriding_approvers_per_merge_request"] = True
    standin.project.approval_rules.append({
        "id": 7, "name": "production", "approvals_required": 2, "rule_type": "regular",
        "users": [], "groups": [], "eligible_approvers": [], "source_rule": None,
        "contains_hidden_groups": False, "overridden": False})
    harness = GitLabHarness(standin, tmp_path)
    iid = _approved_v1(harness)
    second = harness.provider.propose(proposal("2"))
    assert second.approvals_enforced and second.warnings == ()
    mr = standin.project.mrs[iid]
    assert [rule["name"] for rule in mr.rules] == ["production"]  # GitLab refused promoter's
    assert mr.approved_by == []                       # GitLab reset them on the push itself
    assert bot_notes(harness, iid, SETTINGS_NOTE) == []


def test_a_project_rule_requiring_fewer_is_not_enforcement(standin: StandIn,
                                                           tmp_path: Path) -> None:
    standin.project.approval_settings["disable_overriding_approvers_per_merge_request"] = True
    standin.new_mr_pipeline = "running"
    result = GitLabHarness(standin, tmp_path).provider.propose(proposal("1", auto_merge=True))
    assert result.mr_iid is not None and not result.approvals_enforced
    assert not standin.project.mrs[result.mr_iid].auto_merge
    assert any(w.startswith(f"auto-merge not set on !{result.mr_iid}") for w in result.warnings)


def test_the_local_provider_keeps_the_same_promise(tmp_path: Path) -> None:
    """Its approvals are reset by every push and its count is promoter's: nothing to warn of,
    and approvals of version 1 never merge version 2."""
    harness = LocalHarness(tmp_path)
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None
    for user in ("alice", "bob"):
        harness.provider.approve(first.mr_iid, user)   # type: ignore[attr-defined]
    second = harness.provider.propose(proposal("2", auto_merge=True))
    assert second.outcome is Outcome.UPDATED and second.warnings == ()
    mr = harness.provider.get(first.mr_iid)
    assert (mr.state, mr.approved_by, mr.approvals_required) == ("opened", (), 2)
    assert bot_notes(harness, first.mr_iid, SETTINGS_NOTE) == []


def test_a_later_job_does_not_set_auto_merge_again_before_gitlab_aborts_it(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """GitLab aborts an auto-merge after a push in a background job. A later job reading the
    MR before that job ran sees auto-merge still set (for the older head): setting it again
    would move it onto the new head, which the older head's approvals would then merge."""
    keeps_approvals.defer_refresh = True                 # a busy instance's Sidekiq
    harness = GitLabHarness(keeps_approvals, tmp_path)
    first = harness.provider.propose(proposal("1", auto_merge=True))
    assert first.mr_iid is not None
    iid = first.mr_iid
    harness.approve(iid, "alice")
    harness.approve(iid, "bob")
    rebuilt = {"description": "Version 1 of Fraud Detector, rebuilt.",
               "files": trees.rendered(NAME, ENV, "1", replicas=5)}
    again = harness.provider.propose(proposal("1", auto_merge=True, **rebuilt))
    assert again.outcome is Outcome.UPDATED
    assert keeps_approvals.project.mrs[iid].auto_merge   # the abort has not run yet
    later = harness.provider.propose(proposal("1", auto_merge=True, **rebuilt))  # a retry
    assert later.outcome is Outcome.UNCHANGED
    assert keeps_approvals.project.mrs[iid].auto_merge_sha == first.head_sha   # not moved
    keeps_approvals.api.run_pipeline(iid, "success")
    assert keeps_approvals.project.mrs[iid].state == "opened"   # nobody merged the new head
    keeps_approvals.api.refresh()
    assert not keeps_approvals.project.mrs[iid].auto_merge


def test_an_auto_merge_set_for_an_older_head_does_not_merge_a_newer_one(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """The stand-in as GitLab: MergeService refuses a merge whose requested sha is not the
    head any more, so a stale auto-merge whose abort is still pending merges nothing."""
    keeps_approvals.defer_refresh = True
    harness = GitLabHarness(keeps_approvals, tmp_path)
    first = harness.provider.propose(proposal("1", auto_merge=True, approvals_required=0))
    assert first.mr_iid is not None
    harness.provider.propose(proposal("1", auto_merge=False, approvals_required=0,
                                      files=trees.rendered(NAME, ENV, "1", replicas=5)))
    keeps_approvals.api.run_pipeline(first.mr_iid, "success")
    mr = keeps_approvals.project.mrs[first.mr_iid]
    assert mr.state == "opened" and not mr.auto_merge


def _stale_v2_then_fixed(keeps_approvals: StandIn, tmp_path: Path,
                         *, pipeline_passed: bool, fully: bool = True,
                         ) -> tuple[GitLabHarness, int]:
    """Version 1 approved by alice and bob, version 2 pushed onto its MR with a personal token
    (the approvals stay), then a maintainer follows promoter's warning: reset on push on and
    (``fully``) MR rules not editable, a project rule requiring 2; the settings read ages
    out."""
    harness = GitLabHarness(keeps_approvals, tmp_path)
    now = [1000.0]
    harness.provider.forge.clock = lambda: now[0]
    first = harness.provider.propose(proposal("1", auto_merge=True))
    assert first.mr_iid is not None
    iid = first.mr_iid
    harness.approve(iid, "alice")
    harness.approve(iid, "bob")
    second = harness.provider.propose(proposal("2", auto_merge=True))
    assert not keeps_approvals.project.mrs[iid].auto_merge
    assert any("could not withdraw" in warning for warning in second.warnings)
    if pipeline_passed:
        keeps_approvals.api.run_pipeline(iid, "success")       # nobody approved version 2
        assert keeps_approvals.project.mrs[iid].state == "opened"
    keeps_approvals.project.approval_settings["reset_approvals_on_push"] = True
    if fully:
        _strict(keeps_approvals)
    now[0] += APPROVAL_SETTINGS_TTL
    return harness, iid


def _withheld_for_stale(result: ProposalResult, iid: int) -> bool:
    return f"auto-merge not set on !{iid}: reset_approvals_on_push is on now, but turning " \
        "it on removed no approval already given, and approvals given before may be for an " \
        "older version than 2; reviewers must revoke their approvals (a later " \
        "promoter run then sets auto-merge) and approve again, or a maintainer merges it" \
        in result.warnings


def test_approvals_that_survived_a_push_do_not_merge_it_once_the_settings_hold(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """Turning reset_approvals_on_push on removes no approval already given: version 1's
    approvals still count for version 2, so promoter does not set auto-merge on them (MR rules
    are still editable here: promoter warns of that as before)."""
    harness, iid = _stale_v2_then_fixed(keeps_approvals, tmp_path, pipeline_passed=False,
                                           fully=False)
    third = harness.provider.propose(proposal("2", auto_merge=True))   # a later job
    mr = keeps_approvals.project.mrs[iid]
    assert third.outcome is Outcome.UNCHANGED and _withheld_for_stale(third, iid)
    assert not mr.auto_merge and len(mr.approved_by) == 2
    (note,) = bot_notes(harness, iid, SETTINGS_NOTE)
    assert "turning that on removed no approval already given" in note
    keeps_approvals.api.run_pipeline(iid, "success")
    assert mr.state == "opened"                       # nobody merged version 2


def test_stale_approvals_do_not_merge_at_once_after_the_pipeline_passed(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """With version 2's pipeline passed, setting auto-merge is GitLab's "merge now": it would
    merge version 2 at once on version 1's approvals."""
    harness, iid = _stale_v2_then_fixed(keeps_approvals, tmp_path, pipeline_passed=True)
    puts = _merge_puts(keeps_approvals)               # version 1's auto-merge
    third = harness.provider.propose(proposal("2", auto_merge=True))
    assert _withheld_for_stale(third, iid)
    assert keeps_approvals.project.mrs[iid].state == "opened"
    assert _merge_puts(keeps_approvals) == puts       # no merge asked for version 2


def test_approvals_given_after_the_stale_ones_are_gone_merge_it(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """Once the MR has no approvals, those given afterwards are for version 2: promoter sets
    auto-merge, and later jobs keep to that once reviewers approve again."""
    harness, iid = _stale_v2_then_fixed(keeps_approvals, tmp_path, pipeline_passed=False)
    assert _withheld_for_stale(harness.provider.propose(proposal("2", auto_merge=True)), iid)
    harness.unapprove(iid, "alice")
    harness.unapprove(iid, "bob")
    cleared = harness.provider.propose(proposal("2", auto_merge=True))
    mr = keeps_approvals.project.mrs[iid]
    assert cleared.warnings == () and mr.auto_merge
    (note,) = bot_notes(harness, iid, SETTINGS_NOTE)
    assert "the approvals given from now on are for what it holds" in note
    harness.approve(iid, "alice")
    harness.approve(iid, "bob")
    later = harness.provider.propose(proposal("2", auto_merge=True))    # a later job
    assert later.warnings == () and mr.auto_merge
    keeps_approvals.api.run_pipeline(iid, "success")
    assert mr.state == "merged"


def test_a_fixed_project_whose_approvals_never_outlived_a_push_gets_auto_merge(
        standin: StandIn, tmp_path: Path) -> None:
    """Only MR rules were editable (approvals reset on every push): the approvals on the MR
    are its head's, so fixing that setting leaves nothing to hold auto-merge back for."""
    harness = GitLabHarness(standin, tmp_path)
    now = [1000.0]
    harness.provider.forge.clock = lambda: now[0]
    standin.new_mr_pipeline = "running"
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None and _settings_warning(first, first.mr_iid)
    harness.approve(first.mr_iid, "alice")
    _strict(standin)
    now[0] += APPROVAL_SETTINGS_TTL
    again = harness.provider.propose(proposal("1", auto_merge=True))
    assert again.warnings == () and standin.project.mrs[first.mr_iid].auto_merge


def test_the_stale_approvals_record_is_a_marker_not_the_notes_wording(
        keeps_approvals: StandIn, tmp_path: Path) -> None:
    """The guard reads a machine marker in its own note: a note worded otherwise (another
    promoter version's text) that carries it still holds auto-merge back."""
    harness, iid = _stale_v2_then_fixed(keeps_approvals, tmp_path, pipeline_passed=False)
    (note,) = [n for n in keeps_approvals.project.mrs[iid].notes
               if note_slug(n["body"]) == SETTINGS_NOTE]
    assert STALE_APPROVALS_MARKER in note["body"]
    head = note["body"].splitlines()[0]
    note["body"] = f"{head}\nApprovals on this MR predate a push.\n\n{STALE_APPROVALS_MARKER}\n"
    third = harness.provider.propose(proposal("2", auto_merge=True))
    assert _withheld_for_stale(third, iid) and not keeps_approvals.project.mrs[iid].auto_merge
