"""The reconcile loop's MR sweep on both providers: a merge or close whose hook never reached
promoter is recorded by the next sweep, once, under the webhook's guards."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from promoter.core.mr_events import MergeRequestEvent
from promoter.errors import NotFoundError, TransientError
from promoter.ports.git import GC_BRANCH, GC_KEY
from promoter.ports.pipeline import DeployedState
from promoter.secret_settings import Secret
from promoter.service.audit import AuditTrail
from promoter.service.gc_outcomes import overlays_on_target
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.service.ledger import StateLedger
from promoter.service.mr_sweep import MergeRequestSweep
from promoter.service.outcome_claims import OutcomeClaims
from promoter.service.outcomes import MergeRequestOutcomes
from promoter.state.db import StateDB
from promoter.state.gc_pending import GcPending
from promoter.state.left_mrs import LeftMrs
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import mlflow_client, promoter_environ, run_promoter, write_config
from tests.gitlab import trees
from tests.gitlab.conftest import (
    ENV,
    HARNESSES,
    MODEL,
    NAME,
    GitLabHarness,
    Harness,
    LocalHarness,
    make_standin,
    proposal,
)
from tests.gitlab.test_hooks import TOKEN, Receiver
from tests.gitlab.test_outcomes import Tags
from tests.intake.models import create_version


class Promoter:
    """The outcomes side of promoter (ledger, audit, MLflow tags) and its MR sweep, over the
    harness's provider; no hook reaches it unless a test delivers one."""

    def __init__(self, harness: Harness, tmp: Path) -> None:
        self.harness = harness
        db = StateDB.open(tmp / "state")
        self.ledger, self.audit, self.tags = StateLedger(db), AuditTrail(tmp / "state", db), Tags()
        heads = harness.ledger  # type: ignore[attr-defined]  # the record the provider writes
        gitlab = isinstance(harness, GitLabHarness)
        forge = harness.provider.forge if gitlab else None  # type: ignore[attr-defined]
        self.outcomes = MergeRequestOutcomes(
            self.tags, self.ledger, self.audit, heads, forge=lambda: forge,  # type: ignore[arg-type]
            target_overlays=lambda: overlays_on_target(harness.provider, "manifests", "main"))
        if gitlab:
            harness.standin.hook_url = None     # GitLab's hook is lost: captured, not sent
            harness.standin.hook_token = TOKEN
        project = (harness.provider.forge.project_id if gitlab  # type: ignore[attr-defined]
                   else 0)
        self.project_id = project
        self.sweep = MergeRequestSweep(self.ledger, harness.provider, heads, self.outcomes,
                                       project=lambda: (project, "group/gitops"),
                                       target_branch="main", gc_pending=GcPending(db),
                                       on_gc_mr_gone=self.outcomes.gc.gone,
                                       left_mrs=LeftMrs(db))

    def opened(self, version: str) -> tuple[int, str]:
        result = self.harness.provider.propose(proposal(version, approvals_required=0))
        assert result.mr_iid is not None and result.head_sha is not None
        self.ledger.put(DeployedState(MODEL, ENV, NAME, version, "mr_opened", result.mr_iid))
        return result.mr_iid, result.head_sha

    def removal_opened(self, live: str) -> tuple[int, str]:
        """A decommission's MR: the environment's overlay removed, the row decommissioning."""
        result = self.harness.provider.propose(proposal(
            live, files={}, approvals_required=0,
            labels=("promoter", f"env::{ENV}", "decommission")))
        assert result.mr_iid is not None and result.head_sha is not None
        self.ledger.put(DeployedState(MODEL, ENV, NAME, live, "decommissioning", result.mr_iid))
        return result.mr_iid, result.head_sha

    def entries(self, event: str) -> list[dict[str, Any]]:
        return [{k: e.get(k) for k in ("iid", "version", "status", "actor")}
                for e in self.audit.entries() if e["event"] == event]

    def status(self) -> str:
        row = self.ledger.by_deployment(NAME, ENV)
        assert row is not None
        return row.status

    def redeliver_last(self, action: str) -> str:
        """GitLab's last captured hook for ``action`` (merge, close), re-delivered now (same
        Idempotency-Key) to promoter's hook receiver; the status it answers."""
        return str(self.hook_now(action, fresh=False).response["status"])

    def hook_now(self, action: str, *, fresh: bool) -> Any:
        """GitLab's last captured (lost) hook for ``action`` delivered now to the webhook
        handler: as a re-delivery, or ``fresh`` (a new delivery id, so no dedupe)."""
        assert isinstance(self.harness, GitLabHarness)
        standin = self.harness.standin
        captured = [d for d in standin.deliveries
                    if d.payload["object_attributes"].get("action") == action][-1]
        receiver = Receiver(GitLabHookHandler(
            Secret(TOKEN), DeliveryLog(self.ledger.db), self.harness.ledger.pushed,
            self.outcomes))
        try:
            standin.hook_url = receiver.url
            return standin.deliver(captured.event, captured.payload) if fresh \
                else standin.redeliver(captured)
        finally:
            standin.hook_url = None
            receiver.stop()

    def late_hook(self, iid: int) -> None:
        """The merge's outcome arrives after all: GitLab's hook, or `promoter mr` again."""
        if isinstance(self.harness, GitLabHarness):
            assert self.redeliver_last("merge") == "accepted"
            return
        mr = self.harness.provider.get(iid)
        self.outcomes(MergeRequestEvent(
            action="merge", project_id=0, project_path="local", iid=iid, state=mr.state,
            source_branch=mr.source_branch, target_branch=mr.target_branch,
            head_sha=mr.head_sha, url=mr.url, user="alice", name=NAME, env=ENV))


@pytest.fixture
def promoter(harness: Harness, tmp_path: Path) -> Promoter:
    return Promoter(harness, tmp_path)


def test_a_merge_whose_hook_was_lost_is_recorded_once_by_the_sweep(promoter: Promoter) -> None:
    iid, head = promoter.opened("3")
    promoter.harness.merge(iid, head)
    assert promoter.entries("mr.merge") == [] and promoter.status() == "mr_opened"

    report = promoter.sweep()
    assert report.recorded == [{"iid": iid, "name": NAME, "env": ENV, "action": "merge"}]
    merged = [{"iid": iid, "version": "3", "status": "merged", "actor": "reconcile"}]
    assert promoter.entries("mr.merge") == merged
    assert promoter.status() == "merged"
    assert promoter.tags.live == {(MODEL, ENV): "3"}
    assert promoter.audit.live_since(MODEL, "3", ENV) is not None
    written = list(promoter.tags.written)

    assert promoter.sweep().looked_at == 0          # settled: nothing left to look at
    promoter.late_hook(iid)                          # and the hook, late, records nothing more
    assert promoter.entries("mr.merge") == merged
    assert promoter.tags.written == written and promoter.status() == "merged"


def test_a_lost_merge_is_recorded_though_the_next_version_opened_its_mr_first(
        promoter: Promoter) -> None:
    """The row moved on to version 4's MR before any sweep looked at version 3's: the MR it
    left is still followed, and its merge recorded for version 3, once."""
    iid3, head3 = promoter.opened("3")
    promoter.harness.merge(iid3, head3)      # its hook is lost
    iid4, _ = promoter.opened("4")
    assert iid4 != iid3

    report = promoter.sweep()
    assert report.recorded == [{"iid": iid3, "name": NAME, "env": ENV, "action": "merge"}]
    merged = [{"iid": iid3, "version": "3", "status": "merged", "actor": "reconcile"}]
    assert promoter.entries("mr.merge") == merged
    assert promoter.tags.live == {(MODEL, ENV): "3"}     # live until version 4 merges
    assert promoter.status() == "mr_opened"              # the row still follows !iid4
    assert promoter.sweep().looked_at == 1               # !iid4 only: !iid3 is settled
    assert promoter.entries("mr.merge") == merged


def test_a_lost_merge_found_after_the_newer_one_never_becomes_live_again(
        promoter: Promoter) -> None:
    iid3, head3 = promoter.opened("3")
    promoter.harness.merge(iid3, head3)
    iid4, head4 = promoter.opened("4")
    promoter.harness.merge(iid4, head4)      # both hooks lost; one sweep finds both

    promoter.sweep()
    assert promoter.entries("mr.merge") == [
        {"iid": iid4, "version": "4", "status": "merged", "actor": "reconcile"},
        {"iid": iid3, "version": "3", "status": "superseded", "actor": "reconcile"}]
    assert promoter.tags.live == {(MODEL, ENV): "4"}
    assert (MODEL, "3", ENV, {"status": "superseded", "mr_url": promoter.harness.provider.get(
        iid3).url}) in promoter.tags.written
    assert promoter.audit.live_now(ENV)[MODEL].version == "4"
    assert promoter.status() == "merged"


def test_a_lost_merge_found_after_the_row_moved_on_twice_never_becomes_live_again(
        promoter: Promoter) -> None:
    """Version 4's merge was recorded by its hook and the row moved on to version 5's MR
    since: the row no longer shows that 3 was replaced, the recorded history does."""
    iid3, head3 = promoter.opened("3")
    promoter.harness.merge(iid3, head3)      # its hook is lost
    iid4, head4 = promoter.opened("4")
    promoter.harness.merge(iid4, head4)
    promoter.late_hook(iid4)                 # 4's hook arrives
    promoter.opened("5")

    promoter.sweep()
    assert promoter.entries("mr.merge") == [
        {"iid": iid4, "version": "4", "status": "merged", "actor": promoter.entries(
            "mr.merge")[0]["actor"]},
        {"iid": iid3, "version": "3", "status": "superseded", "actor": "reconcile"}]
    assert promoter.tags.live == {(MODEL, ENV): "4"}
    assert promoter.audit.live_now(ENV)[MODEL].version == "4"


def test_a_left_mr_its_late_hook_recorded_is_not_reported_again(promoter: Promoter) -> None:
    iid3, head3 = promoter.opened("3")
    promoter.harness.merge(iid3, head3)
    promoter.opened("4")
    promoter.late_hook(iid3)                 # slow, not lost: recorded by the hook

    report = promoter.sweep()
    assert report.recorded == [] and report.looked_at == 1   # version 4's open MR only
    assert len(promoter.entries("mr.merge")) == 1


def test_a_lost_removal_merge_is_recorded_as_one_though_the_next_mr_opened_first(
        promoter: Promoter) -> None:
    """Version 3 ran, its removal MR merged with its hook lost, and version 4's MR opened
    before the sweep looked: the removal is recorded as what it was, a decommission (no longer
    live anywhere), not as a promotion's merge making version 3 live again."""
    iid3, head3 = promoter.opened("3")
    promoter.harness.merge(iid3, head3)
    promoter.sweep()
    assert promoter.tags.live == {(MODEL, ENV): "3"}
    removal, removal_head = promoter.removal_opened("3")
    promoter.harness.merge(removal, removal_head)     # its hook is lost
    promoter.opened("4")

    report = promoter.sweep()
    assert {"iid": removal, "name": NAME, "env": ENV, "action": "merge"} in report.recorded
    assert promoter.entries("mr.merge")[-1] == {
        "iid": removal, "version": "3", "status": "decommissioned", "actor": "reconcile"}
    assert promoter.tags.live == {(MODEL, ENV): None}
    assert MODEL not in promoter.audit.live_now(ENV)
    assert promoter.status() == "mr_opened"            # the row still follows version 4's MR
    assert promoter.sweep().looked_at == 1             # the removal MR is settled


def test_a_lost_removal_merge_found_after_the_next_merge_changes_nothing_live(
        promoter: Promoter) -> None:
    iid3, head3 = promoter.opened("3")
    promoter.harness.merge(iid3, head3)
    promoter.sweep()
    removal, removal_head = promoter.removal_opened("3")
    promoter.harness.merge(removal, removal_head)
    iid4, head4 = promoter.opened("4")
    promoter.harness.merge(iid4, head4)               # both hooks lost; one sweep finds both

    promoter.sweep()
    assert promoter.tags.live == {(MODEL, ENV): "4"}
    assert promoter.audit.live_now(ENV)[MODEL].version == "4"
    recorded = {entry["iid"]: entry["status"] for entry in promoter.entries("mr.merge")}
    # Recorded as history: replaced by version 4's merge before it was known.
    assert recorded[iid4] == "merged" and recorded[removal] == "superseded"


def test_a_closed_mr_is_recorded_as_closed(promoter: Promoter) -> None:
    iid, _ = promoter.opened("3")
    promoter.harness.human_close(iid)
    promoter.sweep()
    assert promoter.entries("mr.close") == [
        {"iid": iid, "version": "3", "status": "closed", "actor": "reconcile"}]
    assert promoter.status() == "closed" and promoter.tags.live == {}



def test_an_mr_promoter_withdrew_is_not_recorded_as_a_reviewers_close(
        promoter: Promoter) -> None:
    """Version 3 merged; version 4's MR open; 3 proposed again (a rollback): the target holds
    it, so version 4's MR is withdrawn and the row says 3, merged, with no MR. Neither its
    close hook nor the sweep (which follows the MR the row left) may read that close as a
    reviewer's: recorded for the row, it tagged version 3 closed and unsettled the deployment."""
    iid3, head3 = promoter.opened("3")
    promoter.harness.merge(iid3, head3)
    promoter.sweep()
    iid4, _ = promoter.opened("4")
    back = promoter.harness.provider.propose(proposal("3", approvals_required=0))
    assert back.withdrawn_iid == iid4 and back.merge_request is None
    promoter.ledger.put(DeployedState(MODEL, ENV, NAME, "3", "merged", None))  # as the pipeline
    written = list(promoter.tags.written)

    if isinstance(promoter.harness, GitLabHarness):
        assert len([d for d in promoter.harness.standin.deliveries
                    if d.payload["object_attributes"].get("action") == "close"]) == 1
        assert promoter.redeliver_last("close") == "ignored"
    report = promoter.sweep()

    assert report.recorded == [] and report.failed == 0
    assert promoter.entries("mr.close") == []
    assert promoter.status() == "merged" and promoter.tags.written == written
    assert promoter.tags.live == {(MODEL, ENV): "3"}
    assert promoter.sweep().looked_at == 0           # the MR the row left is settled

# --- An MR merged with a head someone else pushed: recorded once, as what it is (GitLab only:
# the local provider's `mr approve` / `mr merge` refuse a head promoter did not push; its
# foreign close, and a foreign merge an earlier promoter locked, are in test_mr_command.py).
GITLAB_ONLY = pytest.mark.parametrize("make_harness", [h for h in HARNESSES if h != "local"],
                                      indirect=True)


def merged_with_a_humans_head(promoter: Promoter) -> tuple[int, str, str]:
    """promoter's MR for version 3, a human's commit pushed onto it, then merged by alice:
    (iid, the head promoter pushed, the human's head that was merged)."""
    iid, pushed = promoter.opened("3")
    human = promoter.harness.human_commit(
        f"promote/{NAME}/{ENV}", f"manifests/{NAME}/overlays/{ENV}/replicas.yaml",
        trees.REPLICAS.format(name=NAME, replicas=7))
    promoter.harness.merge(iid, human)
    return iid, pushed, human


def assert_recorded_as_foreign(promoter: Promoter, iid: int, pushed: str, human: str,
                               actor: str, cli: Callable[..., tuple[int, str, str]]) -> None:
    mr_entries = [e for e in promoter.audit.entries() if str(e["event"]).startswith("mr.")]
    assert [{k: e.get(k) for k in ("event", "iid", "actor", "head_sha", "pushed_sha",
                                   "head_pushed_by_promoter", "model", "name", "env",
                                   "version", "status")} for e in mr_entries] == [
        {"event": "mr.merge_foreign", "iid": iid, "actor": actor, "head_sha": human,
         "pushed_sha": pushed, "head_pushed_by_promoter": False, "model": MODEL, "name": NAME,
         "env": ENV, "version": "3", "status": "merged_unverified"}]
    # MLflow: the version is not "merged" nor live; the ledger no longer waits on the MR.
    assert [(m, v, e, t["status"]) for m, v, e, t in promoter.tags.written] == [
        (MODEL, "3", ENV, "merged_unverified")]
    assert promoter.tags.live == {}
    assert promoter.status() == "merged_unverified"
    assert promoter.audit.live_since(MODEL, "3", ENV) is None
    assert promoter.sweep().looked_at == 0
    # One note on the MR, saying the merged head was not verified.
    notes = [n for n in promoter.harness.notes(iid) if "merged head not verified" in n]
    assert len(notes) == 1 and human in notes[0] and pushed in notes[0]
    # `audit live` (over the same state directory) names no version: what runs is unknown
    # since the foreign merge.
    code, out, _ = cli("audit", "live", "--env", ENV, "--output", "json")
    assert code == 0, out
    [row] = json.loads(out)["live"]
    assert {k: row[k] for k in ("model", "version", "verified", "foreign_head",
                                "proposed_version")} == {
        "model": MODEL, "version": None, "verified": False, "foreign_head": human,
        "proposed_version": "3"}
    code, out, _ = cli("audit", "live", "--env", ENV)
    assert code == 0 and out.startswith(
        f"{MODEL}  unknown (foreign head {human[:12]} merged in place of version 3)  since ")


@GITLAB_ONLY
def test_a_merge_of_a_humans_head_is_recorded_once_as_foreign_by_the_sweep(
        promoter: Promoter, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    iid, pushed, human = merged_with_a_humans_head(promoter)
    report = promoter.sweep()
    assert report.recorded == [{"iid": iid, "name": NAME, "env": ENV, "action": "merge",
                                "head_pushed_by_promoter": False}]
    # GitLab's hook, late, and a second sweep record nothing more.
    assert hook_after_all(promoter, "merge")["status"] == "human_commit"
    assert_recorded_as_foreign(promoter, iid, pushed, human, "reconcile", run_cli)


@GITLAB_ONLY
def test_a_merge_of_a_humans_head_is_recorded_once_as_foreign_by_the_webhook(
        promoter: Promoter, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    iid, pushed, human = merged_with_a_humans_head(promoter)
    answer = hook_after_all(promoter, "merge")
    assert (answer["status"], answer["recorded"], answer["pushed_sha"]) == \
        ("human_commit", "foreign_head", pushed)
    assert hook_after_all(promoter, "merge")["status"] == "human_commit"  # GitLab retries
    assert_recorded_as_foreign(promoter, iid, pushed, human, "alice", run_cli)


@GITLAB_ONLY
def test_a_close_of_a_humans_head_is_recorded_as_foreign_and_closed(promoter: Promoter) -> None:
    iid, pushed = promoter.opened("3")
    promoter.harness.human_commit(
        f"promote/{NAME}/{ENV}", f"manifests/{NAME}/overlays/{ENV}/replicas.yaml",
        trees.REPLICAS.format(name=NAME, replicas=7))
    promoter.harness.human_close(iid)
    assert promoter.sweep().recorded[0]["head_pushed_by_promoter"] is False
    assert [(e["event"], e["status"], e["pushed_sha"]) for e in promoter.audit.entries()
            if str(e["event"]).startswith("mr.")] == [("mr.close_foreign", "closed", pushed)]
    assert promoter.status() == "closed" and promoter.tags.live == {}


def hook_after_all(promoter: Promoter, action: str) -> dict[str, Any]:
    """GitLab's captured (lost) MR Hook of ``action`` delivered now to the webhook handler,
    over a fresh delivery (no Idempotency-Key dedupe: the outcome's own claim must hold)."""
    delivered = promoter.hook_now(action, fresh=True)
    assert delivered.status == 200, delivered.response
    return dict(delivered.response)


def test_an_outcome_another_handler_is_recording_is_not_a_failure_of_the_pass(
        promoter: Promoter) -> None:
    """The webhook (or another replica) holds the merge's claim while the sweep looks: the
    sweep notes it and leaves it to that handler, not counted as an MR it could not check (which
    would make `reconcile --once` exit 3); its next pass finds it recorded."""
    iid, head = promoter.opened("3")
    promoter.harness.merge(iid, head)
    mr = promoter.harness.provider.get(iid)
    event = MergeRequestEvent(
        action="merge", project_id=promoter.project_id, project_path="group/gitops", iid=iid,
        state=mr.state, source_branch=mr.source_branch, target_branch=mr.target_branch,
        head_sha=mr.head_sha, url=mr.url, user="alice", name=NAME, env=ENV)
    with pytest.raises(RuntimeError), OutcomeClaims(promoter.ledger.db).outcome(event) as ours:
        assert ours
        report = promoter.sweep()
        assert report.failed == 0 and report.recorded == []
        assert report.elsewhere == [{"iid": iid, "name": NAME, "env": ENV}]
        assert report.describe()["recording_elsewhere"] == report.elsewhere
        assert promoter.entries("mr.merge") == [] and promoter.status() == "mr_opened"
        raise RuntimeError("the other handler fails, which gives its claim up")
    again = promoter.sweep()
    assert again.recorded == [{"iid": iid, "name": NAME, "env": ENV, "action": "merge"}]
    assert again.elsewhere == [] and promoter.status() == "merged"


# --- Garbage collection's MRs: no ledger row waits on them, so the sweep follows every GC MR
# `promoter gc` noted in the state database until its outcome is recorded (GitLab does not
# re-send a GC merge hook answered 503).


def gc_proposed(promoter: Promoter, version: str) -> tuple[int, str]:
    """fraud ``version`` is live in ENV; GC proposes the MR removing its overlay and, as
    `promoter gc` does, audits the proposal and notes the MR for the sweep."""
    iid, head = promoter.opened(version)
    promoter.harness.merge(iid, head)
    assert promoter.sweep().recorded[0]["action"] == "merge"
    overlay = trees.managed_prefixes(NAME, ENV)[0]
    result = promoter.harness.provider.propose(proposal(
        version, model="garbage collection", name=GC_KEY[0], env=GC_KEY[1],
        files={path: None for path in trees.rendered(NAME, ENV, version, replicas=1)
               if path.startswith(overlay)},
        managed_prefixes=(overlay,), title="Garbage-collect 1 deployment(s)",
        branch_name=GC_BRANCH, approvals_required=0, notes={}))
    assert result.mr_iid is not None and result.head_sha is not None
    promoter.audit.record("gc.proposed", iid=result.mr_iid, head_sha=result.head_sha,
                          removes=[{"model": MODEL, "name": NAME, "env": ENV,
                                    "version": version}])
    GcPending(promoter.ledger.db).proposed(result.mr_iid)
    return result.mr_iid, result.head_sha


def test_a_gc_merge_whose_hook_was_lost_is_recorded_once_by_the_sweep(
        promoter: Promoter) -> None:
    """Another merge of fraud in ENV holds its live_version when the GC merge is handled (the
    webhook would answer 503, and GitLab sends it no more): the sweep leaves it to that
    handler, then records it on its next pass through the webhook's own path, once."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    assert promoter.sweep().looked_at == 1          # the open GC MR: one read, nothing to do
    promoter.harness.merge(gc_iid, gc_head)
    with OutcomeClaims(promoter.ledger.db).live_version(MODEL, ENV):
        busy = promoter.sweep()
    assert busy.elsewhere == [{"iid": gc_iid, "name": "gc", "env": "collect"}]
    assert busy.recorded == [] and busy.failed == 0 and promoter.status() == "merged"

    report = promoter.sweep()
    assert report.recorded == [{"iid": gc_iid, "name": "gc", "env": "collect",
                                "action": "merge"}]
    assert [(e["iid"], e["version"], e["status"], e["actor"])
            for e in promoter.audit.entries() if e["event"] == "mr.merge" and e.get("gc")] \
        == [(gc_iid, "3", "decommissioned", "reconcile")]
    assert promoter.status() == "decommissioned"
    assert promoter.tags.live == {(MODEL, ENV): None}
    assert promoter.audit.live_now_since(MODEL, "3", ENV) is None

    assert promoter.sweep().looked_at == 0          # recorded: no forge read any more
    if isinstance(promoter.harness, GitLabHarness):
        assert hook_after_all(promoter, "merge")["status"] == "accepted"
        assert len([e for e in promoter.audit.entries() if e["event"] == "mr.merge"
                    and e.get("iid") == gc_iid]) == 2    # GC's own entry and the overlay's


def test_an_approval_of_a_gc_mr_keeps_it_followed_until_its_merge_is_recorded(
        promoter: Promoter) -> None:
    """An approval reaches the outcomes handler (webhook, `promoter mr approve`) and is only
    audited: the GC MR's merge is still to come, so the sweep must go on following it (its
    merge hook may be answered 503 and never sent again)."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    mr = promoter.harness.provider.get(gc_iid)
    promoter.outcomes(MergeRequestEvent(
        action="approved", project_id=promoter.project_id, project_path="group/gitops",
        iid=gc_iid, state=mr.state, source_branch=mr.source_branch,
        target_branch=mr.target_branch, head_sha=mr.head_sha, url=mr.url, user="alice",
        name=GC_KEY[0], env=GC_KEY[1]))
    assert GcPending(promoter.ledger.db).unrecorded() == [gc_iid]
    promoter.harness.merge(gc_iid, gc_head)         # its merge hook: lost
    report = promoter.sweep()
    assert report.recorded == [{"iid": gc_iid, "name": "gc", "env": "collect",
                                "action": "merge"}]
    assert promoter.status() == "decommissioned"
    assert GcPending(promoter.ledger.db).unrecorded() == []


def test_a_closed_gc_mr_is_recorded_as_closed_and_changes_nothing(promoter: Promoter) -> None:
    gc_iid, _ = gc_proposed(promoter, "3")
    promoter.harness.human_close(gc_iid)
    report = promoter.sweep()
    assert report.recorded == [{"iid": gc_iid, "name": "gc", "env": "collect",
                                "action": "close"}]
    assert promoter.entries("mr.close") == [
        {"iid": gc_iid, "version": None, "status": None, "actor": "reconcile"}]
    assert promoter.status() == "merged" and promoter.tags.live == {(MODEL, ENV): "3"}
    assert promoter.sweep().looked_at == 0


def gc_decommissions(promoter: Promoter, iid: int) -> list[tuple[str, str]]:
    return [(e["version"], e["status"]) for e in promoter.audit.entries()
            if e["event"] == "mr.merge" and e.get("gc") and e.get("iid") == iid]


def test_an_older_gc_merge_is_recorded_after_a_newer_gc_mr_was_proposed(
        promoter: Promoter) -> None:
    """GC's !a merged while promoter was down; `promoter gc` then opened !b on its branch.
    Following only the newest GC MR would leave !a's merge unrecorded for good."""
    older, older_head = gc_proposed(promoter, "3")
    promoter.harness.merge(older, older_head)
    newer = promoter.harness.provider.propose(proposal(
        "4", model="garbage collection", name=GC_KEY[0], env=GC_KEY[1],
        files={path: None for path in trees.rendered(NAME, ENV, "3")
               if path.startswith(f"manifests/{NAME}/base/")},   # the base left behind
        managed_prefixes=(f"manifests/{NAME}/base/",), title="Garbage-collect the base",
        branch_name=GC_BRANCH, approvals_required=0, notes={})).mr_iid
    assert newer is not None and newer != older
    promoter.audit.record("gc.proposed", iid=newer, head_sha="0" * 40, removes=[])  # as gc does
    GcPending(promoter.ledger.db).proposed(newer)

    report = promoter.sweep()
    assert report.recorded == [{"iid": older, "name": "gc", "env": "collect",
                                "action": "merge"}]
    assert gc_decommissions(promoter, older) == [("3", "decommissioned")]
    assert promoter.status() == "decommissioned"
    assert GcPending(promoter.ledger.db).unrecorded() == [newer]   # still open: followed


class DatabaseBlip(TransientError):
    pass


def test_a_gc_merge_whose_recording_failed_part_way_is_recorded_again_by_the_sweep(
        promoter: Promoter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state database fails after MLflow was written and before the row is marked: the
    GC merge is not taken as recorded, and the next pass records it in full."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    promoter.harness.merge(gc_iid, gc_head)
    decommission = promoter.ledger.decommission_collected

    def fails_once(*args: Any) -> Any:
        monkeypatch.setattr(promoter.ledger, "decommission_collected", decommission)
        raise DatabaseBlip("state database unavailable")

    monkeypatch.setattr(promoter.ledger, "decommission_collected", fails_once)
    assert promoter.sweep().failed == 1
    assert promoter.status() == "merged" and promoter.tags.live == {(MODEL, ENV): None}

    again = promoter.sweep()
    assert again.recorded == [{"iid": gc_iid, "name": "gc", "env": "collect",
                               "action": "merge"}]
    assert promoter.status() == "decommissioned"
    assert promoter.audit.live_now_since(MODEL, "3", ENV) is None
    assert [e["iid"] for e in promoter.audit.entries() if e["event"] == "mr.merge"
            and e.get("name") == "gc"] == [gc_iid]
    assert promoter.sweep().looked_at == 0


def test_the_sweep_reads_no_audit_trail(promoter: Promoter,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass costs one small state query for GC, however long the trail, and an audit
    that cannot be read stops nothing."""
    def unreadable() -> Any:
        raise AssertionError("the sweep read the audit trail")

    gc_proposed(promoter, "3")                      # a GC MR noted, still open
    monkeypatch.setattr(promoter.audit, "entries", unreadable)
    report = promoter.sweep()
    assert report.looked_at == 1 and report.failed == 0


def test_a_gc_merge_recorded_after_the_same_version_was_deployed_again_spares_it(
        promoter: Promoter) -> None:
    """GC's merge removed fraud v3's overlay, then v3 was promoted (and merged) again before
    the GC merge was recorded: the target branch runs v3 there, so nothing is decommissioned."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    promoter.harness.merge(gc_iid, gc_head)
    again, again_head = promoter.opened("3")
    promoter.harness.merge(again, again_head)

    report = promoter.sweep()
    assert [r["iid"] for r in report.recorded] == [again, gc_iid]
    assert gc_decommissions(promoter, gc_iid) == []
    assert promoter.status() == "merged" and promoter.tags.live == {(MODEL, ENV): "3"}
    [skipped] = [e for e in promoter.audit.entries() if e["event"] == "gc.skipped"]
    assert (skipped["iid"], skipped["env"], skipped["version"]) == (gc_iid, ENV, "3")
    assert "target branch still has" in skipped["reason"]
    assert promoter.sweep().looked_at == 0


@GITLAB_ONLY
def test_a_gc_mr_deleted_on_the_forge_is_audited_and_no_longer_followed(
        promoter: Promoter) -> None:
    """An owner deleted GC's MR before it merged: nothing can merge it now, so the sweep
    audits that and stops reading it (it failed every pass for good before); nothing it
    would have removed is decommissioned."""
    gc_iid, _ = gc_proposed(promoter, "3")
    promoter.harness.delete_mr(gc_iid)  # type: ignore[attr-defined]

    report = promoter.sweep()
    assert (report.gone, report.failed, report.recorded) == ([gc_iid], 0, [])
    assert report.describe()["gc_mrs_gone"] == [gc_iid]
    [gone] = [e for e in promoter.audit.entries() if e["event"] == "gc.mr_gone"]
    assert (gone["iid"], gone["actor"], gone["decommissioned"]) == (gc_iid, "reconcile", [])
    assert not [e for e in promoter.audit.entries() if e["event"] == "gc.skipped"]
    assert promoter.status() == "merged" and promoter.tags.live == {(MODEL, ENV): "3"}
    assert GcPending(promoter.ledger.db).unrecorded() == []
    assert promoter.sweep().looked_at == 0


def test_a_gc_merge_is_not_recorded_while_the_target_branch_cannot_be_read(
        promoter: Promoter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target branch is not on the remote (renamed, or git.target_branch set wrong): read
    as "no files", every overlay GC planned would count as removed and be decommissioned while
    it may still run. The merge stays unrecorded, its note kept, until the branch is read."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    promoter.harness.merge(gc_iid, gc_head)
    monkeypatch.setattr(promoter.outcomes.gc, "_target_overlays", lambda: overlays_on_target(
        promoter.harness.provider, "manifests", "renamed-main"))

    failed = promoter.sweep()
    assert [f.iid for f in failed.failures] == [gc_iid] and failed.recorded == []
    assert "no target branch 'renamed-main'" in failed.failures[0].error.message
    assert promoter.status() == "merged" and promoter.tags.live == {(MODEL, ENV): "3"}
    assert GcPending(promoter.ledger.db).unrecorded() == [gc_iid]

    monkeypatch.undo()
    assert [r["iid"] for r in promoter.sweep().recorded] == [gc_iid]
    assert promoter.status() == "decommissioned"


@GITLAB_ONLY
def test_a_gc_mr_merged_unseen_then_deleted_still_decommissions_what_it_removed(
        promoter: Promoter) -> None:
    """Its merge hook was lost, then an owner deleted the merged MR: the target branch no
    longer has the overlay, so it is decommissioned as the merge would have done it."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    promoter.harness.merge(gc_iid, gc_head)
    promoter.harness.delete_mr(gc_iid)  # type: ignore[attr-defined]

    report = promoter.sweep()
    assert (report.gone, report.failed) == ([gc_iid], 0)
    assert promoter.status() == "decommissioned" and promoter.tags.live == {(MODEL, ENV): None}
    assert promoter.audit.live_now_since(MODEL, "3", ENV) is None
    assert gc_decommissions(promoter, gc_iid) == [("3", "decommissioned")]
    [gone] = [e for e in promoter.audit.entries() if e["event"] == "gc.mr_gone"]
    assert gone["decommissioned"] == [{"name": NAME, "env": ENV, "version": "3"}]
    assert promoter.sweep().looked_at == 0


@GITLAB_ONLY
def test_a_deleted_gc_mr_is_checked_against_every_plan_it_carried(promoter: Promoter) -> None:
    """GC proposed again after the merge it never saw (its newest plan removes something
    else): which head merged is unknown once the MR is deleted, so every plan it carried is
    checked against the target branch."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    promoter.harness.merge(gc_iid, gc_head)
    promoter.audit.record("gc.proposed", iid=gc_iid, head_sha="b" * 40, removes=[
        {"model": "other", "name": "other", "env": ENV, "version": "1"}])
    promoter.harness.delete_mr(gc_iid)  # type: ignore[attr-defined]

    assert promoter.sweep().gone == [gc_iid]
    assert promoter.status() == "decommissioned"
    assert gc_decommissions(promoter, gc_iid) == [("3", "decommissioned")]


@GITLAB_ONLY
def test_a_deleted_gc_mr_whose_merge_was_recorded_is_not_recorded_again(
        promoter: Promoter) -> None:
    """The merge was recorded, but the run stopped before removing the note; the MR was
    deleted since: its merge is not recorded a second time (one claim for both)."""
    gc_iid, gc_head = gc_proposed(promoter, "3")
    promoter.harness.merge(gc_iid, gc_head)
    assert [r["iid"] for r in promoter.sweep().recorded] == [gc_iid]
    GcPending(promoter.ledger.db).proposed(gc_iid)       # as if the note had not gone
    promoter.harness.delete_mr(gc_iid)  # type: ignore[attr-defined]
    before = list(promoter.audit.entries())

    assert promoter.sweep().gone == [gc_iid]
    assert list(promoter.audit.entries()) == before
    assert GcPending(promoter.ledger.db).unrecorded() == []


@GITLAB_ONLY
def test_a_gc_mr_stays_followed_when_its_gone_entry_cannot_be_written(
        promoter: Promoter, monkeypatch: pytest.MonkeyPatch) -> None:
    gc_iid, _ = gc_proposed(promoter, "3")
    promoter.harness.delete_mr(gc_iid)  # type: ignore[attr-defined]
    record = promoter.audit.record

    def fails_once(*args: Any, **fields: Any) -> Any:
        monkeypatch.setattr(promoter.audit, "record", record)
        raise DatabaseBlip("state database unavailable")

    monkeypatch.setattr(promoter.audit, "record", fails_once)
    failed = promoter.sweep()
    assert failed.gone == [] and [f.iid for f in failed.failures] == [gc_iid]
    assert GcPending(promoter.ledger.db).unrecorded() == [gc_iid]
    assert promoter.sweep().gone == [gc_iid]
    assert GcPending(promoter.ledger.db).unrecorded() == []


@GITLAB_ONLY
def test_a_gc_merge_of_a_foreign_head_that_kept_an_overlay_decommissions_nothing(
        promoter: Promoter) -> None:
    """Someone pushed to GC's branch a commit putting fraud's overlay back, and merged that:
    the overlay still runs, so it is skipped, and the merge is audited as not promoter's."""
    gc_iid, _ = gc_proposed(promoter, "3")
    kept = trees.rendered(NAME, ENV, "3", replicas=1)
    path = next(p for p in kept if p.startswith(trees.managed_prefixes(NAME, ENV)[0]))
    human = promoter.harness.human_commit(GC_BRANCH, path, kept[path], create=True)
    promoter.harness.merge(gc_iid, human)

    report = promoter.sweep()
    assert report.recorded == [{"iid": gc_iid, "name": "gc", "env": "collect",
                                "action": "merge", "head_pushed_by_promoter": False}]
    assert gc_decommissions(promoter, gc_iid) == []
    assert promoter.status() == "merged" and promoter.tags.live == {(MODEL, ENV): "3"}
    assert [e["iid"] for e in promoter.audit.entries() if e["event"] == "gc.skipped"] == \
        [gc_iid]
    [merge] = [e for e in promoter.audit.entries() if e["event"] == "mr.merge_foreign"]
    assert (merge["iid"], merge["head_sha"], merge["head_pushed_by_promoter"]) == \
        (gc_iid, human, False)


def test_a_forge_error_on_one_mr_does_not_stop_the_pass(promoter: Promoter) -> None:
    iid, head = promoter.opened("3")
    promoter.harness.merge(iid, head)
    # A second deployment whose MR the forge does not know (deleted project MR, bad row):
    # unlike a GC MR it stays a failure of the pass, for only an operator can tell its outcome.
    promoter.ledger.put(DeployedState("Other", ENV, "other", "1", "mr_opened", 999))
    report = promoter.sweep()
    assert report.failed == 1 and [r["iid"] for r in report.recorded] == [iid]
    assert [(f.iid, f.name, f.env) for f in report.failures] == [(999, "other", ENV)]
    assert isinstance(report.failures[0].error, NotFoundError) and report.gone == []
    assert report.describe()["failures"] == [f.describe() for f in report.failures]
    assert promoter.status() == "merged"


def test_the_composition_root_wires_the_sweep_to_the_providers_pushed_heads(
        tmp_path: Path) -> None:
    """The sweep `promoter serve` runs: the configured provider, its project id, settings'
    target branch."""
    from promoter.service import composition
    from promoter.settings import load_settings

    harness = LocalHarness(tmp_path)  # GitLab's settings need a token; its id is used above
    config = tmp_path / "promoter.yaml"
    config.write_text(f"git:\n  provider: local\n  remote: {harness.remote}\n")
    settings = load_settings(config, {"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    world = Promoter(harness, tmp_path)
    iid, head = world.opened("4")
    harness.merge(iid, head)
    sweep = composition.mr_sweep(settings, world.outcomes)
    assert sweep.target_branch == "main" and sweep.project() == (0, "local")
    assert sweep.gc_pending is not None and \
        sweep.gc_pending.db.path == composition.state_db(settings).path  # `promoter gc`'s
    assert sweep.on_gc_mr_gone == world.outcomes.gc.gone
    assert [r["iid"] for r in sweep().recorded] == [iid]
    assert world.status() == "merged" and world.tags.live == {(MODEL, ENV): "4"}


# --- `promoter reconcile --once`: the pass a CronJob (or an operator after a hook outage) runs


class CommandWorld:
    """promoter's state directory with one MR it pushed to the GitLab stand-in, the ledger row
    waiting on it and the real MLflow version it deploys; `promoter reconcile --once` runs
    over the same state directory as a subprocess."""

    def __init__(self, mlflow_url: str, tmp: Path) -> None:
        self.standin = make_standin(tmp)   # no hook_url: GitLab's hook is lost
        self.harness = GitLabHarness(self.standin, tmp)
        db = StateDB.open(tmp / "state")
        self.ledger, self.audit = StateLedger(db), AuditTrail(tmp / "state", db)
        self.mlflow = mlflow_client(mlflow_url)
        self.model = f"sweep-command-{uuid.uuid4().hex[:8]}"  # the session's MLflow is shared
        self.version = create_version(self.mlflow, self.model)
        self.config = write_config(tmp / "promoter.yaml", state_dir=tmp / "state",
                                   mlflow_url=mlflow_url, provider="gitlab",
                                   gitlab_url=self.standin.base_url)
        self.env = promoter_environ()

    def merged_without_hook(self) -> int:
        result = self.harness.provider.propose(
            proposal(self.version, model=self.model, approvals_required=0))
        assert result.mr_iid is not None and result.head_sha is not None
        self.ledger.put(DeployedState(self.model, ENV, NAME, self.version, "mr_opened",
                                      result.mr_iid))
        self.harness.merge(result.mr_iid, result.head_sha)
        return result.mr_iid

    def reconcile(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_promoter("reconcile", "--once", *args, env=self.env, config=self.config,
                            timeout=120)

    def status(self) -> str:
        row = self.ledger.by_deployment(NAME, ENV)
        assert row is not None
        return row.status

    def merges(self) -> list[dict[str, Any]]:
        return [{k: e.get(k) for k in ("iid", "version", "status", "actor")}
                for e in self.audit.entries() if e["event"] == "mr.merge"]

    def tags(self) -> tuple[str | None, str | None]:
        """(the version's status tag, the model's live version for the environment)"""
        version = self.mlflow.get_model_version(self.model, self.version)
        model = self.mlflow.get_registered_model(self.model)
        return (version.tags.get(f"promoter.{ENV}.status"),
                model.tags.get(f"promoter.{ENV}.live_version"))


@pytest.fixture
def command_world(mlflow_server: MlflowServer, tmp_path: Path) -> Iterator[CommandWorld]:
    world = CommandWorld(mlflow_server.url, tmp_path)
    yield world
    world.standin.stop()


@pytest.mark.e2e
def test_reconcile_once_records_a_merge_whose_hook_was_lost(command_world: CommandWorld
                                                              ) -> None:
    iid = command_world.merged_without_hook()
    assert command_world.status() == "mr_opened" and command_world.merges() == []

    done = command_world.reconcile("--output", "json")
    assert done.returncode == 0, done.stderr
    sweep = json.loads(done.stdout)["mr_sweep"]
    assert sweep["recorded"] == [{"iid": iid, "name": NAME, "env": ENV, "action": "merge"}]
    assert sweep["failed"] == 0
    assert command_world.status() == "merged"     # a staging-first gate now sees the merge
    assert command_world.merges() == [{"iid": iid, "version": command_world.version,
                                       "status": "merged", "actor": "reconcile"}]
    assert command_world.tags() == ("merged", command_world.version)

    again = command_world.reconcile()             # text output; settled: nothing to look at
    assert again.returncode == 0, again.stderr
    assert "MR sweep: 0 waiting merge requests looked at, 0 outcomes recorded" in again.stdout
    assert len(command_world.merges()) == 1


@pytest.mark.e2e
def test_a_forge_outage_in_the_sweep_still_reports_the_mlflow_pass(command_world: CommandWorld
                                                                  ) -> None:
    iid = command_world.merged_without_hook()
    command_world.mlflow.set_registered_model_alias(command_world.model, "staging",
                                                    command_world.version)
    command_world.standin.fault("GET", r"/projects/", "503", times=1_000)   # GitLab is down

    failed = command_world.reconcile()
    assert failed.returncode == 3, failed.stdout + failed.stderr
    queued = f"promote {command_world.model} v{command_world.version} → staging"
    assert queued in failed.stdout                                # the pass's report first
    assert "error: the MR sweep failed:" in failed.stderr
    assert "the MLflow pass above completed" in failed.stderr
    assert "bot-token" not in failed.stdout + failed.stderr
    assert command_world.status() == "mr_opened" and command_world.merges() == []

    command_world.standin.faults.clear()                           # GitLab is back
    done = command_world.reconcile()
    assert done.returncode == 0, done.stderr
    assert f"recorded merge of MR !{iid}: {NAME} → {ENV}" in done.stdout
    assert queued not in done.stdout                               # the job was queued once
    assert command_world.status() == "merged"


@pytest.mark.e2e
def test_an_mr_the_forge_cannot_show_is_listed_and_fails_the_run(command_world: CommandWorld
                                                                ) -> None:
    iid = command_world.merged_without_hook()
    # A deployment whose MR the project does not have (deleted, or the wrong project set).
    command_world.ledger.put(DeployedState("other", ENV, "other", "1", "mr_opened", iid + 98))

    done = command_world.reconcile("--output", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    sweep = json.loads(done.stdout)["mr_sweep"]
    assert [r["iid"] for r in sweep["recorded"]] == [iid]       # the other MR is recorded
    assert [(f["iid"], f["name"]) for f in sweep["failures"]] == [(iid + 98, "other")]
    assert "could not check 1 merge request(s)" in done.stderr
    assert command_world.status() == "merged"


def test_a_crash_in_the_sweep_still_reports_the_mlflow_pass(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A bug in the sweep is reported after the pass, as a forge error is, with its trace
    in the log and only its type on the command line."""
    from promoter import cli
    from promoter.commands import reconcile as command
    from promoter.service import composition
    from promoter.service.reconcile import PassReport

    def crash(*_args: object, **_kwargs: object) -> object:
        raise KeyError("internal detail")

    monkeypatch.setenv("PROMOTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(composition, "registry", lambda settings: None)
    monkeypatch.setattr(command, "_mlflow_pass", lambda settings, registry, leading: PassReport(
        models=3, jobs=[{"created": True, "job_id": 9, "action": "promote", "model": "m",
                         "version": "2", "env": "staging"}]))
    monkeypatch.setattr(composition, "mr_sweep", crash)
    with pytest.raises(SystemExit) as ended:
        cli.main(["reconcile", "--once"])
    out, err = capsys.readouterr()
    assert ended.value.code == 1
    assert "3 models" in out and "queued job 9: promote m v2 → staging" in out
    assert "the MR sweep failed: unexpected KeyError (its trace is logged)" in err
    assert "internal detail" not in out + err.split("Traceback")[0]


def test_a_model_whose_stages_could_not_be_listed_is_reported_and_fails_the_run(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The pass went on past it (service.reconcile); the command lists it and ends with 3
    after the sweep, so a CronJob notices while the other models' jobs stay queued."""
    from promoter import cli
    from promoter.commands import reconcile as command
    from promoter.service import composition
    from promoter.service.mr_sweep import SweepReport
    from promoter.service.reconcile import PassReport

    monkeypatch.setenv("PROMOTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(composition, "registry", lambda settings: None)
    monkeypatch.setattr(command, "_mlflow_pass", lambda settings, registry, leading: PassReport(
        models=2, failed=[{"model": "a-broken", "error": "MLflow did not answer in 30 s"}]))
    monkeypatch.setattr(command, "_mr_sweep", lambda settings, registry: (SweepReport(), None))
    with pytest.raises(SystemExit) as ended:
        cli.main(["reconcile", "--once"])
    out, err = capsys.readouterr()
    assert ended.value.code == 3
    assert "could not list the stages of a-broken: MLflow did not answer in 30 s" in out
    assert "MR sweep: 0 waiting merge requests looked at" in out
    assert "MLflow could not list the stages of 1 model(s)" in err


def test_a_second_close_after_a_reopen_and_a_new_head_is_recorded(
        standin: Any, tmp_path: Path) -> None:
    """Closed (recorded), reopened by a person, given version 4 by promoter, closed again with
    its hook lost: the first close's claim (per MR and action) held for good, so the second
    was never recorded and version 4 waited on a closed MR, the sweep calling it recorded on
    every pass. A close is claimed per head."""
    from promoter.ports.pipeline import DeployedState as Row

    harness = GitLabHarness(standin, tmp_path)
    promoter = Promoter(harness, tmp_path)
    iid, _ = promoter.opened("3")
    harness.human_close(iid)
    promoter.sweep()
    assert promoter.status() == "closed"
    harness.as_user("alice-token").mergerequests.update(iid, {"state_event": "reopen"})
    again = harness.provider.propose(proposal("4", approvals_required=0))
    assert again.mr_iid == iid
    promoter.ledger.put(Row(MODEL, ENV, NAME, "4", "mr_opened", iid))
    harness.human_close(iid)

    report = promoter.sweep()
    assert [r["action"] for r in report.recorded] == ["close"]
    assert promoter.status() == "closed"
    assert [e["version"] for e in promoter.entries("mr.close")] == ["3", "4"]


@pytest.mark.e2e
def test_reconcile_once_handles_a_kept_failed_delivery_again(command_world: CommandWorld
                                                             ) -> None:
    """`serve --no-reconcile` with `reconcile --once` on a schedule: the run handles again the
    GitLab deliveries that failed while promoter acted on them (GitLab does not retry them)."""
    from promoter.state.failed_deliveries import FailedDeliveries

    result = command_world.harness.provider.propose(
        proposal(command_world.version, model=command_world.model, approvals_required=1))
    assert result.mr_iid is not None
    command_world.ledger.put(DeployedState(command_world.model, ENV, NAME,
                                           command_world.version, "mr_opened", result.mr_iid))
    command_world.harness.approve(result.mr_iid, "alice")   # captured: no hook URL
    approved = command_world.standin.deliveries[-1]
    assert approved.payload["object_attributes"]["action"] == "approved"
    # As the webhook kept it when MLflow was down: due long ago.
    FailedDeliveries(command_world.ledger.db, lambda: 0.0).keep(
        approved.headers["Idempotency-Key"], approved.event,
        json.dumps(approved.payload).encode(), "MLflow is down")

    done = command_world.reconcile("--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["failed_deliveries"] == {"answered": 1}
    assert command_world.status() == "approved"
    assert [(e["actor"], e["status"]) for e in command_world.audit.entries()
            if e["event"] == "mr.approved"] == [("alice", "approved")]
    assert command_world.tags()[0] == "approved"
    again = command_world.reconcile()
    assert "failed GitLab deliveries handled again: 0" in again.stdout
