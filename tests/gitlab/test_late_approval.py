"""An approval delivered after the MR's merge or close: GitLab sends each hook from a job of its
own (Sidekiq), so an ``approved`` sent just before an auto-merge can reach promoter after the
``merge``, and a delivery resent by hand from GitLab's *Recent events* arrives whenever it is
resent. Recorded as it came, it moved the settled row back to ``approved`` and wrote
``approved`` over the version's ``merged`` tag; the MR sweep then followed the row for good."""

from __future__ import annotations

from typing import Any

from tests.gitlab.conftest import ENV, MODEL, GitLabHarness
from tests.gitlab.test_mr_sweep import Promoter
from tests.gitlab.test_reopen import live as live
from tests.gitlab.test_reopen import statuses


def late_approval(promoter: Promoter) -> Any:
    """GitLab's ``approved`` hook for the MR, delivered now as a delivery of its own."""
    return promoter.hook_now("approved", fresh=True)


def test_an_approval_arriving_after_the_merge_leaves_it_merged(live: Promoter) -> None:
    iid, head = live.opened("3")
    live.harness.approve(iid, "bob")
    live.harness.merge(iid, head)
    assert live.status() == "merged" and live.tags.live == {(MODEL, ENV): "3"}

    delivery = late_approval(live)
    assert delivery.response["status"] == "accepted"
    assert live.status() == "merged"
    assert statuses(live, "3")[-1] == "merged"
    assert live.tags.live == {(MODEL, ENV): "3"}
    # Audited as it happened (GitLab's approval is a fact), with nothing made of it.
    assert [e["status"] for e in live.entries("mr.approved")] == ["approved", None]
    assert live.sweep().recorded == []           # the row waits on nothing


def test_an_approval_arriving_after_the_close_leaves_it_closed(live: Promoter) -> None:
    iid, _ = live.opened("3")
    live.harness.approve(iid, "bob")
    live.harness.human_close(iid)
    assert live.status() == "closed"

    assert late_approval(live).response["status"] == "accepted"
    assert live.status() == "closed" and statuses(live, "3")[-1] == "closed"


def test_an_approval_of_a_waiting_mr_still_approves_it(live: Promoter) -> None:
    """The rule keeps an approval of an open MR: delivered twice (a resend), it approves."""
    iid, _ = live.opened("3")
    live.harness.approve(iid, "bob")
    assert live.status() == "approved"
    assert isinstance(live.harness, GitLabHarness)
    assert late_approval(live).response["status"] == "accepted"
    assert live.status() == "approved" and statuses(live, "3")[-1] == "approved"
