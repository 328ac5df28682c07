"""A merge request closed, reopened and settled again: GitLab's stand-in sends its real Merge
Request Hooks (``close``, ``reopen``, ``approved``, ``merge``) over HTTP to promoter's webhook
handler, and the MR sweep records what a lost hook did not. The reopen is audited, the row
and the version's tag wait on the MR again, and its next outcome is recorded, not taken for
the first close."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promoter.core.mr_events import MergeRequestEvent
from promoter.ports.pipeline import DeployedState
from promoter.secret_settings import Secret
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.state.db import StateDB
from promoter.state.gc_pending import GcPending
from tests.gitlab.conftest import ENV, MODEL, GitLabHarness
from tests.gitlab.test_hooks import TOKEN, Receiver
from tests.gitlab.test_mr_sweep import Promoter, gc_proposed
from tests.gitlab.test_outcomes import BRANCH, World


@pytest.fixture
def live(standin: Any, tmp_path: Path) -> Iterator[Promoter]:
    """promoter with GitLab's hooks reaching its webhook handler as they are sent."""
    promoter = Promoter(GitLabHarness(standin, tmp_path), tmp_path)
    receiver = Receiver(GitLabHookHandler(
        Secret(TOKEN), DeliveryLog(promoter.ledger.db), promoter.harness.ledger.pushed,
        promoter.outcomes))
    standin.hook_url = receiver.url
    yield promoter
    standin.hook_url = None
    receiver.stop()


def reopen(promoter: Promoter, iid: int) -> None:
    assert isinstance(promoter.harness, GitLabHarness)
    promoter.harness.as_user("alice-token").mergerequests.update(iid, {"state_event": "reopen"})


def answers(promoter: Promoter, action: str) -> list[str]:
    """What promoter's webhook answered to each delivery of ``action``."""
    assert isinstance(promoter.harness, GitLabHarness)
    return [str(d.response["status"]) for d in promoter.harness.standin.deliveries
            if d.payload["object_attributes"].get("action") == action]


def last_delivery(promoter: Promoter, action: str) -> Any:
    """GitLab's last delivery of the MR hook for ``action``, as promoter answered it."""
    assert isinstance(promoter.harness, GitLabHarness)
    return [d for d in promoter.harness.standin.deliveries
            if d.payload["object_attributes"].get("action") == action][-1]


def statuses(promoter: Promoter, version: str) -> list[str]:
    """The status tags written on ``version``, in order."""
    return [tags["status"] for model, written, env, tags in promoter.tags.written
            if (model, written, env) == (MODEL, version, ENV)]


def test_a_close_after_a_reopen_is_recorded_again(live: Promoter) -> None:
    iid, _ = live.opened("3")
    live.harness.human_close(iid)
    assert live.status() == "closed" and statuses(live, "3") == ["closed"]

    reopen(live, iid)
    assert answers(live, "reopen") == ["accepted"]
    assert live.entries("mr.reopen") == [
        {"iid": iid, "version": "3", "status": "mr_opened", "actor": "alice"}]
    assert live.status() == "mr_opened" and statuses(live, "3") == ["closed", "mr_opened"]

    live.harness.human_close(iid)
    assert live.entries("mr.close") == [
        {"iid": iid, "version": "3", "status": "closed", "actor": "alice"}] * 2
    assert live.status() == "closed" and statuses(live, "3")[-1] == "closed"


def test_an_approval_after_a_reopen_is_recorded(live: Promoter) -> None:
    iid, _ = live.opened("3")
    live.harness.approve(iid, "bob")
    live.harness.human_close(iid)
    reopen(live, iid)
    live.harness.approve(iid, "alice")
    assert [e["status"] for e in live.entries("mr.approved")] == ["approved", "approved"]
    assert live.status() == "approved"
    assert statuses(live, "3") == ["approved", "closed", "mr_opened", "approved"]


def test_a_close_after_a_reopen_whose_hook_was_lost_is_recorded_by_the_sweep(
        live: Promoter) -> None:
    iid, _ = live.opened("3")
    live.harness.human_close(iid)
    reopen(live, iid)
    assert live.sweep().recorded == []          # open again: nothing to record
    assert isinstance(live.harness, GitLabHarness)
    live.harness.standin.hook_url = None         # the second close's hook is lost
    live.harness.human_close(iid)

    report = live.sweep()
    assert [r["action"] for r in report.recorded] == ["close"]
    assert [e["actor"] for e in live.entries("mr.close")] == ["alice", "reconcile"]
    assert live.status() == "closed"


def test_a_removal_mr_closed_reopened_and_merged_is_a_decommission(live: Promoter) -> None:
    """Closed, the removal MR's row said ``closed``: merged after a reopen, it was recorded as
    a promotion's merge of the version it removes, which became live again."""
    iid, head = live.opened("3")
    live.harness.merge(iid, head)
    assert live.tags.live == {(MODEL, ENV): "3"}
    removal, removal_head = live.removal_opened("3")
    live.harness.human_close(removal)
    reopen(live, removal)
    live.harness.merge(removal, removal_head)
    assert [e["status"] for e in live.entries("mr.merge") if e["iid"] == removal] \
        == ["decommissioned"]
    assert live.status() == "decommissioned"
    assert live.tags.live == {(MODEL, ENV): None}
    assert live.audit.live_now(ENV) == {}
    assert live.entries("mr.reopen") == [
        {"iid": removal, "version": "3", "status": "decommissioning", "actor": "alice"}]
    assert statuses(live, "3")[-3:] == ["closed", "decommissioning", "decommissioned"]


def test_a_gc_mr_closed_reopened_and_merged_unseen_is_recorded_by_the_sweep(
        live: Promoter) -> None:
    """The GC MR's close ended the sweep's watch; its reopen starts it again, so a merge
    whose hook is lost is still recorded as the decommission it is."""
    assert isinstance(live.harness, GitLabHarness)
    hook_url, live.harness.standin.hook_url = live.harness.standin.hook_url, None
    gc_iid, gc_head = gc_proposed(live, "3")    # recorded by the sweep (gc_proposed asks)
    live.harness.standin.hook_url = hook_url
    live.harness.human_close(gc_iid)
    assert GcPending(live.ledger.db).unrecorded() == []
    reopen(live, gc_iid)
    assert answers(live, "reopen") == ["accepted"]
    assert [e["iid"] for e in live.entries("mr.reopen")] == [gc_iid]
    assert GcPending(live.ledger.db).unrecorded() == [gc_iid]

    live.harness.standin.hook_url = None
    live.harness.merge(gc_iid, gc_head)
    assert [r["action"] for r in live.sweep().recorded] == ["merge"]
    assert live.status() == "decommissioned"
    assert live.tags.live == {(MODEL, ENV): None}


@pytest.mark.parametrize("tag_first", [True, False], ids=["after-its-tag", "before-its-tag"])
def test_a_merge_during_a_reopens_write_back_is_recorded_after_it(
        live: Promoter, tag_first: bool) -> None:
    """The reopened MR merged while its reopen writes ``mr_opened`` back to MLflow (just
    after or just before the tag is written): the reopen used to put the row back to
    ``mr_opened`` over the recorded merge, and the merge, claimed as recorded, was never
    recorded again. The merge now waits for the reopen (503) and is recorded after it."""
    iid, head = live.opened("3")
    live.harness.human_close(iid)
    assert isinstance(live.harness, GitLabHarness)
    live.harness.standin.hook_url = None          # the reopen's hook captured, sent below
    reopen(live, iid)
    write_back, merge_answers = live.tags.write_back, []

    def merged_meanwhile(model: str, version: str, env: str, tags: dict[str, str]) -> None:
        if tags.get("status") != "mr_opened" or merge_answers:
            write_back(model, version, env, tags)
            return
        if tag_first:
            write_back(model, version, env, tags)
        live.harness.merge(iid, head)
        merge_answers.append(last_delivery(live, "merge").status)
        if not tag_first:
            write_back(model, version, env, tags)

    live.tags.write_back = merged_meanwhile         # type: ignore[method-assign]
    # Sent while the reopen is handled, the merge's hook reaches promoter at once.
    assert live.redeliver_last("reopen") == "accepted"
    live.tags.write_back = write_back               # type: ignore[method-assign]
    assert merge_answers == [503]                   # GitLab retries it
    assert live.status() == "mr_opened" and statuses(live, "3")[-1] == "mr_opened"

    assert live.redeliver_last("merge") == "accepted"
    assert live.status() == "merged" and statuses(live, "3")[-1] == "merged"
    assert live.tags.live == {(MODEL, ENV): "3"}
    assert [e["status"] for e in live.entries("mr.reopen")] == ["mr_opened"]
    assert [e["status"] for e in live.entries("mr.merge")] == ["merged"]


def test_a_reopen_whose_write_back_failed_is_audited_once(live: Promoter) -> None:
    """MLflow down during the reopen: GitLab is answered 503 and re-delivers it. The reopen
    was audited before its write-back, so the re-delivery audited it a second time."""
    iid, _ = live.opened("3")
    live.harness.human_close(iid)
    live.tags.failures = 1
    reopen(live, iid)
    assert last_delivery(live, "reopen").status == 503
    assert live.entries("mr.reopen") == [] and live.status() == "closed"

    assert live.redeliver_last("reopen") == "accepted"
    assert live.entries("mr.reopen") == [
        {"iid": iid, "version": "3", "status": "mr_opened", "actor": "alice"}]
    assert live.status() == "mr_opened" and statuses(live, "3") == ["closed", "mr_opened"]


@pytest.mark.parametrize("tag_first", [True, False], ids=["after-its-tag", "before-its-tag"])
def test_an_approval_recorded_during_a_reopen_stands(live: Promoter, tag_first: bool) -> None:
    """Approved while the reopen, which had read the row ``closed``, writes ``mr_opened`` to
    MLflow. Just after that tag: the reopen's row update is a compare-and-set on ``closed``,
    so it no longer overwrites the approval's row. Just before it: the approval wrote
    ``approved`` on tag and row, then the reopen's ``mr_opened`` landed on the tag, and the
    row (compare-and-set) stayed approved: tag and row disagreed for good. The reopen now
    writes the row's status to the tag again."""
    iid, _ = live.opened("3")
    live.harness.human_close(iid)
    assert isinstance(live.harness, GitLabHarness)
    live.harness.standin.hook_url = None
    reopen(live, iid)
    write_back, approval_answers = live.tags.write_back, []

    def approved_meanwhile(model: str, version: str, env: str, tags: dict[str, str]) -> None:
        if tag_first:
            write_back(model, version, env, tags)
        if tags.get("status") == "mr_opened" and not approval_answers:
            live.harness.approve(iid, "bob")
            approval_answers.append(last_delivery(live, "approved").response["status"])
        if not tag_first:
            write_back(model, version, env, tags)

    live.tags.write_back = approved_meanwhile       # type: ignore[method-assign]
    assert live.redeliver_last("reopen") == "accepted"
    live.tags.write_back = write_back               # type: ignore[method-assign]
    assert approval_answers == ["accepted"]
    assert live.status() == "approved" and statuses(live, "3")[-1] == "approved"
    # The approval's tag; before it or after it the reopen's, then the row's written again.
    assert statuses(live, "3")[-3:] == \
        (["mr_opened", "approved", "approved"] if tag_first else
         ["approved", "mr_opened", "approved"])
    assert [e["status"] for e in live.entries("mr.approved")] == ["approved"]
    assert [e["status"] for e in live.entries("mr.reopen")] == ["mr_opened"]


def test_a_removal_mr_merged_after_a_lost_reopen_hook_is_a_decommission(
        live: Promoter) -> None:
    """The reopen's hook lost, the row still said ``closed`` when the removal MR's merge
    arrived: recorded as a merge of the version it removes, which became live again."""
    iid, head = live.opened("3")
    live.harness.merge(iid, head)
    removal, removal_head = live.removal_opened("3")
    live.harness.human_close(removal)
    assert isinstance(live.harness, GitLabHarness)
    hook_url, live.harness.standin.hook_url = live.harness.standin.hook_url, None
    reopen(live, removal)                            # its hook is lost
    live.harness.standin.hook_url = hook_url
    live.harness.merge(removal, removal_head)
    assert [e["status"] for e in live.entries("mr.merge") if e["iid"] == removal] \
        == ["decommissioned"]
    assert live.status() == "decommissioned" and live.tags.live == {(MODEL, ENV): None}
    assert closed_removal_notes(live.ledger.db) == []   # merged: never reopened again


def test_a_closed_removal_mr_is_one_of_its_project_only(tmp_path: Path) -> None:
    """``git.project`` changed: the new project's promotion MR with the iid of a removal MR
    closed in the old one was taken for that removal MR on its reopen, and its merge
    recorded as a decommission of the version it deploys."""
    world = World(tmp_path)
    world.heads.record(7, 5, BRANCH, "a" * 40, "3", "fraud")
    world.ledger.put(DeployedState("fraud", "staging", "fraud", "3", "decommissioning", 5))
    world.outcomes(mr_event("close", 7, 5, "a" * 40))
    assert world.ledger.by_deployment("fraud", "staging").status == "closed"  # type: ignore[union-attr]

    world.heads.record(8, 5, BRANCH, "b" * 40, "4", "fraud")   # the new project's !5
    world.ledger.put(DeployedState("fraud", "staging", "fraud", "4", "mr_opened", 5))
    for action in ("close", "reopen", "merge"):
        world.outcomes(mr_event(action, 8, 5, "b" * 40))
    row = world.ledger.by_deployment("fraud", "staging")
    assert row is not None and (row.version, row.status) == ("4", "merged")
    assert world.tags.live == {("fraud", "staging"): "4"}
    assert [tags["status"] for _, version, _, tags in world.tags.written if version == "4"] \
        == ["closed", "mr_opened", "merged"]


def test_a_closed_removal_mr_is_forgotten_once_its_row_moves_on(live: Promoter) -> None:
    """Its reopen can undo nothing once the row follows another MR (it is audited only): its
    note went only with a reopen, and stayed for ever otherwise."""
    iid, head = live.opened("3")
    live.harness.merge(iid, head)
    removal, _ = live.removal_opened("3")
    live.harness.human_close(removal)
    assert len(closed_removal_notes(live.ledger.db)) == 1
    live.opened("4")
    assert closed_removal_notes(live.ledger.db) == []


def mr_event(action: str, project: int, iid: int, head: str) -> MergeRequestEvent:
    """GitLab's MR hook for ``action`` on MR ``iid`` of ``project``, as parsed."""
    return MergeRequestEvent(
        action=action, project_id=project, project_path="g/gitops", iid=iid, state="opened",
        source_branch=BRANCH, target_branch="main", head_sha=head,
        url=f"https://gitlab.example.com/g/gitops/-/merge_requests/{iid}", user="alice",
        name="fraud", env="staging")


def closed_removal_notes(db: StateDB) -> list[str]:
    return [str(key) for (key,) in db.read(lambda conn: conn.execute(
        "SELECT key FROM state_meta WHERE key LIKE 'mr.closed!_removal.%' ESCAPE '!'"
    ).fetchall())]
