"""The MR sweep's pure decisions: which ledger rows need a look, which event a settled MR is."""

from __future__ import annotations

import dataclasses
from typing import Any

from promoter.core.mr_sweep import (
    GC_LIMIT,
    SWEEP_ACTOR,
    SweepDecision,
    noted_mrs_to_look_at,
    rows_to_look_at,
    settled_event,
    settled_gc_event,
)
from promoter.ports.git import GC_BRANCH, MergeRequest
from promoter.ports.pipeline import DeployedState

SHA = "a" * 40
ROW = DeployedState("fraud", "staging", "fraud", "5", "mr_opened", 3, SHA)
MR = MergeRequest(iid=3, id=103, url="https://gitlab.example/g/gitops/-/merge_requests/3",
                  state="merged", source_branch="promote/fraud/staging", target_branch="main",
                  title="Promote fraud version 5 to staging", head_sha=SHA,
                  merge_commit_sha="b" * 40)


BOT = "promoter-bot"


def decide(row: DeployedState = ROW, pushed_sha: str | None = SHA,
           own: str | None = BOT, **mr: Any) -> SweepDecision:
    return settled_event(row, dataclasses.replace(MR, **mr), pushed_sha=pushed_sha,
                         target_branch="main", project_id=42, project_path="g/gitops",
                         own=lambda: own)


def test_only_rows_waiting_on_an_mr_are_looked_at_oldest_first_and_bounded() -> None:
    rows = [dataclasses.replace(ROW, name=f"m{iid}", status=status, mr_iid=iid)
            for iid, status in [(9, "mr_opened"), (2, "approved"), (5, "decommissioning"),
                                (1, "merged"), (4, "closed"), (3, "decommissioned")]]
    rows.append(dataclasses.replace(ROW, name="old", mr_iid=None))   # no MR recorded
    assert [r.mr_iid for r in rows_to_look_at(rows, 10)] == [2, 5, 9]
    assert [r.mr_iid for r in rows_to_look_at(rows, 2)] == [2, 5]
    assert [r.mr_iid for r in rows_to_look_at(rows, 2, left_alone={2})] == [5, 9]


def test_a_merged_mr_becomes_the_merge_event_the_hook_would_have_carried() -> None:
    decision = settled_event(ROW, MR, pushed_sha=SHA, target_branch="main", project_id=42,
                             project_path="g/gitops", own=lambda: BOT)
    event = decision.event
    assert event is not None and not decision.left_alone
    assert (event.action, event.iid, event.project_id, event.name, event.env) == \
        ("merge", 3, 42, "fraud", "staging")
    assert (event.user, event.head_sha, event.merge_commit_sha, event.url) == \
        (SWEEP_ACTOR, SHA, "b" * 40, MR.url)


def test_a_closed_mr_becomes_a_close_event() -> None:
    decision = decide(state="closed")
    assert decision.event is not None and decision.event.action == "close"


def test_open_or_already_recorded_mrs_change_nothing() -> None:
    for state in ("opened", "locked"):
        assert decide(state=state).event is None
    merged_row = dataclasses.replace(ROW, status="merged")
    assert decide(merged_row).event is None
    assert decide(state="closed", title="Promote fraud - superseded",
                  closed_by=BOT).event is None


def test_a_close_titled_as_promoters_by_someone_else_is_a_reviewers_close() -> None:
    """A reviewer who retitles the MR "… - superseded" (or "… - withdrawn") and closes it
    closed it: before, the title alone made it promoter's, and the row waited for good."""
    for title in ("Promote fraud - superseded", "Promote fraud - withdrawn"):
        decision = decide(state="closed", title=title, closed_by="mallory")
        assert decision.event is not None and decision.event.action == "close"
        # GitLab not saying who closed it is not promoter saying so either.
        assert decide(state="closed", title=title, closed_by=None).event is not None
        # A forge without accounts (the local provider): the title tells.
        assert decide(state="closed", title=title, own=None).event is None


def test_the_forge_is_asked_who_promoter_is_only_for_a_close_titled_as_promoters() -> None:
    asked: list[str] = []

    def own() -> str:
        asked.append("asked")
        return BOT

    for mr in (dataclasses.replace(MR, state="closed"), MR):
        settled_event(ROW, mr, pushed_sha=SHA, target_branch="main", project_id=42,
                      project_path="g/gitops", own=own)
    assert asked == []


def test_what_the_webhook_would_refuse_is_left_alone() -> None:
    refused = [decide(head_sha="c" * 40, target_branch="scratch"), decide(pushed_sha=None),
               decide(target_branch="scratch"), decide(source_branch="feature/x")]
    for decision in refused:
        assert decision.event is None and decision.left_alone
    assert decide(head_sha="c" * 40, target_branch="scratch").reason == "human_commit"


def test_a_humans_head_settled_on_the_target_is_a_foreign_outcome_not_promoters() -> None:
    for state, action in (("merged", "merge"), ("closed", "close")):
        decision = decide(head_sha="c" * 40, state=state)
        event = decision.event
        assert event is not None and not decision.left_alone
        assert (event.action, event.head_sha, event.pushed_sha, event.foreign_head) == \
            (action, "c" * 40, SHA, True)
    own = decide().event
    assert own is not None and own.pushed_sha is None and not own.foreign_head


def test_every_unrecorded_gc_mr_is_followed_oldest_first_a_few_a_pass() -> None:
    """An older GC MR merged unseen is not dropped when a newer one is proposed."""
    assert noted_mrs_to_look_at([]) == []
    assert noted_mrs_to_look_at([7, 4]) == [4, 7]
    assert noted_mrs_to_look_at([7, 4], left_alone={4}) == [7]
    assert noted_mrs_to_look_at(range(1, 2 * GC_LIMIT)) == list(range(1, GC_LIMIT + 1))


def test_a_settled_gc_mr_becomes_gcs_event_under_the_webhooks_guards() -> None:
    gc_mr = dataclasses.replace(MR, source_branch=GC_BRANCH, title="Garbage-collect 1")
    decision = settled_gc_event(gc_mr, pushed_sha=SHA, target_branch="main", project_id=42,
                                project_path="g/gitops")
    assert decision.event is not None
    assert (decision.event.name, decision.event.env, decision.event.action) == \
        ("gc", "collect", "merge")
    for refused in (dataclasses.replace(gc_mr, source_branch="promote/fraud/staging"),
                    dataclasses.replace(gc_mr, target_branch="scratch")):
        left = settled_gc_event(refused, pushed_sha=SHA, target_branch="main", project_id=42,
                                project_path="g/gitops")
        assert left.event is None and left.left_alone
    # Closed as superseded: recorded too (a close), or the sweep would read it every pass.
    superseded = dataclasses.replace(gc_mr, state="closed", title="Garbage-collect - superseded")
    closed = settled_gc_event(superseded, pushed_sha=SHA, target_branch="main", project_id=42,
                              project_path="g/gitops")
    assert closed.event is not None and closed.event.action == "close"
    opened = dataclasses.replace(gc_mr, state="opened")
    assert settled_gc_event(opened, pushed_sha=SHA, target_branch="main", project_id=42,
                            project_path="g/gitops").event is None
