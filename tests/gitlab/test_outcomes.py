"""What a merge request's outcome changes: the version that MR deploys, on the branch Argo CD
syncs; never the version a newer MR of the same deployment proposes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promoter.core.live_history import live_at, live_versions, previous_live
from promoter.core.mr_events import MergeRequestEvent
from promoter.errors import TransientError
from promoter.ports.pipeline import DeployedState
from promoter.secret_settings import Secret
from promoter.service.audit import AuditTrail
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.service.ledger import StateLedger
from promoter.service.outcome_claims import OutcomeClaims
from promoter.service.outcomes import MergeRequestOutcomes
from promoter.state.db import StateDB
from promoter.state.pushed_heads import PushedHeads

TOKEN = "hook-s3cret"
BRANCH = "promote/fraud/staging"


class Tags:
    """The registry's write-back side, recorded (the hook path needs nothing else)."""

    def __init__(self) -> None:
        self.written: list[tuple[str, str, str, dict[str, str]]] = []
        self.live: dict[tuple[str, str], str | None] = {}
        self.failures = 0           # the next write-backs that fail (MLflow down)

    def write_back(self, model: str, version: str, env: str, tags: dict[str, str]) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("MLflow at http://mlflow is unreachable")
        self.written.append((model, version, env, tags))

    def live_version(self, model: str, env: str) -> str | None:
        return self.live.get((model, env))

    def set_live_version(self, model: str, env: str, version: str | None) -> None:
        self.live[(model, env)] = version


class World:
    """One promoter process over a state store (its own connection to it) and an MLflow."""

    def __init__(self, tmp: Path, db: StateDB | None = None, tags: Tags | None = None,
                 claims: OutcomeClaims | None = None) -> None:
        db = db or StateDB.open(tmp / "state")
        self.ledger, self.audit, self.heads = StateLedger(db), AuditTrail(tmp / "state", db), \
            PushedHeads(db)
        self.tags = tags or Tags()
        self.outcomes = outcomes = MergeRequestOutcomes(
            self.tags, self.ledger, self.audit, self.heads, claims)  # type: ignore[arg-type]
        self.handler = GitLabHookHandler(Secret(TOKEN), DeliveryLog(db), self.heads.pushed,
                                         outcomes, target_branch="main")

    def opened(self, iid: int, version: str, model: str = "fraud") -> None:
        """promoter pushed ``model``'s ``version`` as MR ``iid`` (deployment name "fraud")
        and the ledger follows that MR."""
        sha = f"{iid:x}" * 40
        self.heads.record(7, iid, BRANCH, sha[:40], version, model)
        self.ledger.put(DeployedState(model, "staging", "fraud", version, "mr_opened", iid))

    def hook(self, iid: int, action: str = "merge", target: str = "main",
             branch: str = BRANCH, expect: int | None = 200) -> dict[str, Any]:
        """Deliver the MR Hook; ``expect``: the HTTP status it must get (None: any)."""
        attributes = {"iid": iid, "action": action, "state": "merged", "source_branch": branch,
                      "target_branch": target, "last_commit": {"id": (f"{iid:x}" * 40)[:40]},
                      "url": f"https://gitlab.example.com/g/gitops/-/merge_requests/{iid}",
                      "title": f"Promote fraud to staging (!{iid})"}
        body = {"object_kind": "merge_request", "event_type": "merge_request",
                "user": {"username": "alice"},
                "project": {"id": 7, "path_with_namespace": "g/gitops"},
                "object_attributes": attributes}
        status, answer = self.handler.handle(
            {"X-Gitlab-Token": TOKEN, "X-Gitlab-Event": "Merge Request Hook"},
            json.dumps(body).encode())
        assert expect is None or status == expect, answer
        return answer

    def merges(self) -> list[dict[str, Any]]:
        return [{k: e.get(k) for k in ("iid", "version", "status")}
                for e in self.audit.entries() if e["event"] == "mr.merge"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_late_merge_of_an_older_mr_is_recorded_for_the_version_it_deployed(
        world: World) -> None:
    """!1 (v5) merged; before its hook arrived the alias moved to v6 and !2 was opened on the
    same branch. The merge deployed v5: v5 is live, v6 is still only proposed."""
    world.opened(1, "5")
    world.opened(2, "6")
    assert world.hook(1)["status"] == "accepted"
    assert world.merges() == [{"iid": 1, "version": "5", "status": "merged"}]
    assert world.audit.live_since("fraud", "5", "staging") is not None
    assert world.audit.live_since("fraud", "6", "staging") is None
    row = world.ledger.by_deployment("fraud", "staging")
    assert row is not None and (row.version, row.status, row.mr_iid) == ("6", "mr_opened", 2)
    assert [(v, t["status"]) for _, v, _, t in world.tags.written] == [("5", "merged")]
    assert world.tags.live == {("fraud", "staging"): "5"}


def test_a_merge_whose_write_back_failed_is_recorded_when_it_comes_again(
        world: World) -> None:
    """MLflow down while the merge hook is handled: the hook fails (GitLab may re-deliver; the
    reconcile sweep looks again), and the outcome must not count as recorded until MLflow has
    it: a repeated merge of a recorded outcome is a no-op."""
    world.opened(1, "5")
    world.tags.failures = 1
    failed = world.hook(1, expect=503)
    assert failed["error"] == "unavailable"
    row = world.ledger.by_deployment("fraud", "staging")
    assert row is not None and row.status == "mr_opened"      # not recorded yet
    assert world.hook(1)["status"] == "accepted"
    assert [(v, t["status"]) for _, v, _, t in world.tags.written] == [("5", "merged")]
    assert world.tags.live == {("fraud", "staging"): "5"}
    row = world.ledger.by_deployment("fraud", "staging")
    assert row is not None and row.status == "merged"
    assert world.hook(1)["status"] == "accepted"              # and now it is: no more writes
    assert len(world.tags.written) == 1


class SupersedingFailsOnce(Tags):
    """MLflow fails once, on the tag of the version a merge replaces."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write_back(self, model: str, version: str, env: str, tags: dict[str, str]) -> None:
        if tags.get("status") == "superseded" and not self.failed:
            self.failed = True
            raise TransientError("MLflow at http://mlflow is unreachable")
        super().write_back(model, version, env, tags)


def test_a_merge_whose_superseded_tag_failed_tags_it_when_it_comes_again(
        tmp_path: Path) -> None:
    """The merge's own tag reached MLflow, the replaced version's did not: the hook fails and
    its re-delivery must still tag v4 superseded (live_version has not moved past it)."""
    world = World(tmp_path, tags=SupersedingFailsOnce())
    world.opened(1, "5")
    world.tags.live[("fraud", "staging")] = "4"
    assert world.hook(1, expect=503)["error"] == "unavailable"
    assert world.hook(1)["status"] == "accepted"
    assert ("4", "superseded") in [(v, t["status"]) for _, v, _, t in world.tags.written]
    assert [e["version"] for e in world.audit.entries() if e["event"] == "version.superseded"] \
        == ["4"]
    assert world.tags.live == {("fraud", "staging"): "5"}


def test_the_current_mrs_merge_updates_the_ledger(world: World) -> None:
    world.opened(1, "5")
    world.opened(2, "6")
    assert world.hook(2)["status"] == "accepted"
    assert world.merges() == [{"iid": 2, "version": "6", "status": "merged"}]
    row = world.ledger.by_deployment("fraud", "staging")
    assert row is not None and (row.version, row.status) == ("6", "merged")
    assert world.tags.live == {("fraud", "staging"): "6"}


def test_a_merge_into_another_branch_deploys_nothing_and_is_not_acted_on(world: World) -> None:
    world.opened(1, "5")
    answer = world.hook(1, target="scratch")
    assert answer["status"] == "ignored" and "'scratch', not 'main'" in answer["reason"]
    assert world.merges() == [] and world.tags.written == []
    assert world.audit.live_since("fraud", "5", "staging") is None
    row = world.ledger.by_deployment("fraud", "staging")
    assert row is not None and row.status == "mr_opened"


def test_a_gc_merge_hook_decommissions_the_overlays_its_head_removes(world: World) -> None:
    """The GC branch is not promote/<name>/<env>, yet its merge removes deployments."""
    world.opened(1, "5")
    world.hook(1)                                       # fraud 5 is live in staging
    sha = ("9" * 40)
    world.heads.record(7, 9, "promoter/gc", sha, "20260101")
    world.audit.record("gc.proposed", iid=9, head_sha=sha, removes=[
        {"model": "fraud", "name": "fraud", "env": "staging", "version": "5"}])
    assert world.hook(9, branch="promoter/gc")["status"] == "accepted"
    assert world.audit.live_now_since("fraud", "5", "staging") is None
    row = world.ledger.by_deployment("fraud", "staging")
    assert row is not None and row.status == "decommissioned"
    assert world.tags.live == {("fraud", "staging"): None}
    assert world.tags.written[-1] == ("fraud", "5", "staging", {
        "status": "decommissioned", "mr_url": "https://gitlab.example.com/g/gitops/-/merge_requests/9"})


def test_a_late_merge_is_replaced_by_the_next_mrs_merge_not_the_latest(
        tmp_path: Path) -> None:
    """!2 (version 5) merged unseen; !3 (version 3, a rollback) and !4 (version 6) merged
    and were recorded after it: !2's version was rolled back by !3, whatever came since."""
    world = World(tmp_path)
    world.heads.record(7, 2, BRANCH, "2" * 40, "5", "fraud")
    world.ledger.put(DeployedState("fraud", "staging", "fraud", "6", "merged", 4))
    for iid, version, status in ((3, "3", "merged"), (4, "6", "merged")):
        world.audit.record("mr.merge", actor="alice", name="fraud", env="staging", iid=iid,
                           model="fraud", version=version, status=status)
    world.outcomes(MergeRequestEvent(
        action="merge", project_id=7, project_path="group/gitops", iid=2, state="merged",
        source_branch=BRANCH, target_branch="main", head_sha="2" * 40, url="u", user="bob",
        name="fraud", env="staging"))
    assert ("fraud", "5", "staging", {"status": "rolled_back", "mr_url": "u"}) in \
        world.tags.written


@pytest.mark.parametrize(("next_merge", "next_version"), [
    ("the same version re-rendered", "5"), ("someone else's head", None)])
def test_a_late_merge_audited_only_makes_nothing_live_again(
        tmp_path: Path, next_merge: str, next_version: str | None) -> None:
    """!2 (v5) merged unseen; !3 (``next_merge``) and !4 (v6) merged and were recorded. !2's
    merge, found late, is audited only (no status: the next merge was not of another version
    promoter can name); read as a fresh merge it made v5 live again after v6, which runs:
    `audit live`, status and GC saw v5, and rollback's target was v6, the running version."""
    world = World(tmp_path)
    world.heads.record(7, 2, BRANCH, "2" * 40, "5", "fraud")
    world.ledger.put(DeployedState("fraud", "staging", "fraud", "6", "merged", 4))
    world.audit.record("mr.merge", actor="alice", name="fraud", env="staging", iid=1,
                       model="fraud", version="4", status="merged")
    if next_version is None:
        world.audit.record("mr.merge_foreign", actor="eve", name="fraud", env="staging", iid=3,
                           model="fraud", version="5", status="merged_foreign",
                           head_sha="e" * 40)
    else:
        world.audit.record("mr.merge", actor="alice", name="fraud", env="staging", iid=3,
                           model="fraud", version=next_version, status="merged")
    world.audit.record("mr.merge", actor="alice", name="fraud", env="staging", iid=4,
                       model="fraud", version="6", status="merged")
    world.outcomes(MergeRequestEvent(
        action="merge", project_id=7, project_path="group/gitops", iid=2, state="merged",
        source_branch=BRANCH, target_branch="main", head_sha="2" * 40, url="u", user="bob",
        name="fraud", env="staging"))
    late = world.merges()[-1]
    assert late == {"iid": 2, "version": "5", "status": None}
    assert [v for _, v, _, _ in world.tags.written] == []        # nothing written to MLflow
    entries = list(world.audit.entries())
    assert live_at(entries, "staging", 1e12, "fraud")["fraud"].version == "6"
    history = live_versions(entries, "staging", "fraud")
    assert history[-1] == "6" and previous_live(entries, "staging", "fraud") != "6"
