"""The reconcile loop's MR sweep on both providers: a merge or close whose hook never reached
promoter is recorded by the next sweep, once, under the webhook's guards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promoter.core.mr_events import MergeRequestEvent
from promoter.ports.pipeline import DeployedState
from promoter.secret_settings import Secret
from promoter.service.audit import AuditTrail
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.service.ledger import StateLedger
from promoter.service.mr_sweep import MergeRequestSweep
from promoter.service.outcomes import MergeRequestOutcomes
from promoter.state.db import StateDB
from tests.gitlab import trees
from tests.gitlab.conftest import (
    ENV,
    HARNESSES,
    MODEL,
    NAME,
    GitLabHarness,
    Harness,
    LocalHarness,
    proposal,
)
from tests.gitlab.test_hooks import TOKEN, Receiver
from tests.gitlab.test_outcomes import Tags


class Promoter:
    """The outcomes side of promoter (ledger, audit, MLflow tags) and its MR sweep, over the
    harness's provider; no hook reaches it unless a test delivers one."""

    def __init__(self, harness: Harness, tmp: Path) -> None:
        self.harness = harness
        db = StateDB.open(tmp / "state")
        self.ledger, self.audit, self.tags = StateLedger(db), AuditTrail(tmp / "state", db), Tags()
        heads = harness.ledger  # type: ignore[attr-defined]  # the record the provider writes
        self.outcomes = MergeRequestOutcomes(self.tags, self.ledger,  # type: ignore[arg-type]
                                             self.audit, heads)
        gitlab = isinstance(harness, GitLabHarness)
        if gitlab:
            harness.standin.hook_url = None     # GitLab's hook is lost: captured, not sent
            harness.standin.hook_token = TOKEN
        project = (harness.provider.forge.project_id if gitlab  # type: ignore[attr-defined]
                   else 0)
        self.sweep = MergeRequestSweep(self.ledger, harness.provider, heads, self.outcomes,
                                       project=lambda: (project, "group/gitops"),
                                       target_branch="main")

    def opened(self, version: str) -> tuple[int, str]:
        result = self.harness.provider.propose(proposal(version, approvals_required=0))
        assert result.mr_iid is not None and result.head_sha is not None
        self.ledger.put(DeployedState(MODEL, ENV, NAME, version, "mr_opened", result.mr_iid))
        return result.mr_iid, result.head_sha

    def entries(self, event: str) -> list[dict[str, Any]]:
        return [{k: e.get(k) for k in ("iid", "version", "status", "actor")}
                for e in self.audit.entries() if e["event"] == event]

    def status(self) -> str:
        row = self.ledger.by_deployment(NAME, ENV)
        assert row is not None
        return row.status

    def late_hook(self, iid: int) -> None:
        """The merge's outcome arrives after all: GitLab's hook, or `promoter mr` again."""
        if isinstance(self.harness, GitLabHarness):
            standin = self.harness.standin
            merge = [d for d in standin.deliveries
                     if d.payload["object_attributes"].get("action") == "merge"][-1]
            receiver = Receiver(GitLabHookHandler(
                Secret(TOKEN), DeliveryLog(self.ledger.db), self.harness.ledger.pushed,
                self.outcomes))
            try:
                standin.hook_url = receiver.url
                assert standin.redeliver(merge).response["status"] == "accepted"
            finally:
                standin.hook_url = None
                receiver.stop()
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


def test_a_closed_mr_is_recorded_as_closed(promoter: Promoter) -> None:
    iid, _ = promoter.opened("3")
    promoter.harness.human_close(iid)
    promoter.sweep()
    assert promoter.entries("mr.close") == [
        {"iid": iid, "version": "3", "status": "closed", "actor": "reconcile"}]
    assert promoter.status() == "closed" and promoter.tags.live == {}


# GitLab only: the local provider merges the head its MR records, which is promoter's.
@pytest.mark.parametrize("make_harness", [h for h in HARNESSES if h != "local"], indirect=True)
def test_an_mr_merged_with_a_humans_head_is_left_alone(promoter: Promoter) -> None:
    iid, _ = promoter.opened("3")
    human = promoter.harness.human_commit(
        f"promote/{NAME}/{ENV}", f"manifests/{NAME}/overlays/{ENV}/replicas.yaml",
        trees.REPLICAS.format(name=NAME, replicas=7))
    promoter.harness.merge(iid, human)
    report = promoter.sweep()
    assert report.looked_at == 1 and report.recorded == []
    assert promoter.entries("mr.merge") == [] and promoter.status() == "mr_opened"
    assert promoter.tags.written == []
    assert promoter.sweep().looked_at == 0          # not asked about again every pass


def test_a_forge_error_on_one_mr_does_not_stop_the_pass(promoter: Promoter) -> None:
    iid, head = promoter.opened("3")
    promoter.harness.merge(iid, head)
    # A second deployment whose MR the forge does not know (deleted project MR, bad row).
    promoter.ledger.put(DeployedState("Other", ENV, "other", "1", "mr_opened", 999))
    report = promoter.sweep()
    assert report.failed == 1 and [r["iid"] for r in report.recorded] == [iid]
    assert [(f.iid, f.name, f.env) for f in report.failures] == [(999, "other", ENV)]
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
    assert [r["iid"] for r in sweep().recorded] == [iid]
    assert world.status() == "merged" and world.tags.live == {(MODEL, ENV): "4"}
