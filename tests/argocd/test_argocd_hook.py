"""POST /webhooks/argocd: Argo CD notifications with bodies rendered from promoter's template."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from promoter.errors import NotFoundError, TransientError
from promoter.ports.git import MergeRequest
from promoter.ports.pipeline import DeployedState
from promoter.ports.registry import ModelVersionInfo
from promoter.secret_settings import Secret
from promoter.service import argocd_hook, composition
from promoter.service.app import create_app
from promoter.service.argocd_hook import ArgoCDHookHandler
from promoter.service.audit import AuditTrail
from promoter.service.cluster_feedback import NOTE_HEADING, ClusterFeedback
from promoter.service.cluster_status_store import DELIVERY_SOURCE, StatusStore
from promoter.service.hook_deliveries import HookDeliveries
from promoter.service.ledger import StateLedger
from promoter.service.queue import JobQueue
from promoter.settings import load_settings
from promoter.state.deliveries import PROCESSING_TAKEOVER_SECONDS
from tests.argocd.applications import REVISION, application, notification
from tests.fixtures.failing_state import (
    WRITES,
    FailingWrites,
    assert_unavailable_and_not_ready,
    post_then_probe,
)

SECRET = "s3cret-token"


class RecordingRegistry:
    """Keeps the Registry.write_back contract: tags per (model, version), promoter.<env>.*."""

    def __init__(self) -> None:
        self.tags: dict[tuple[str, str], dict[str, str]] = {}
        self.live: dict[tuple[str, str], str | None] = {}
        self.down = False

    def write_back(self, model: str, version: str, env: str, values: Mapping[str, str]) -> None:
        if self.down:
            raise TransientError("MLflow is down")
        tags = self.tags.setdefault((model, version), {})
        tags.update({f"promoter.{env}.{key}": value for key, value in values.items()})

    def model_version(self, model: str, version: str) -> ModelVersionInfo:
        return ModelVersionInfo(model, version, source="", run_id=None, stage=None,
                                tags=dict(self.tags.get((model, version), {})))

    def live_version(self, model: str, env: str) -> str | None:   # the outcomes handler's
        return self.live.get((model, env))

    def set_live_version(self, model: str, env: str, version: str | None) -> None:
        self.live[(model, env)] = version


class Notes:
    """The forge's side: one note per heading, and which commits each revision contains
    (the providers' own ``is_ancestor`` is tested on real git in tests/gitlab)."""

    def __init__(self) -> None:
        self.notes: dict[tuple[int, str], str] = {}
        self.history: dict[str, set[str]] = {}   # revision -> its ancestors

    def upsert_note(self, iid: int, heading: str, body: str) -> None:
        self.notes[(iid, heading)] = body

    def is_ancestor(self, commit: str, revision: str) -> bool:
        return commit == revision or commit in self.history.get(revision, set())


class MergeRequests:
    def __init__(self) -> None:
        self.state, self.merge_commit = "opened", None

    def get(self, iid: int) -> MergeRequest:
        return MergeRequest(iid=iid, id=iid, url=f"local:!{iid}", state=self.state,
                            source_branch="promote/fraud-detector/production",
                            target_branch="main", title="t", head_sha="a" * 40,
                            merge_commit_sha=self.merge_commit)


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Any]:
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    registry, notes, audit = RecordingRegistry(), Notes(), AuditTrail(tmp_path)
    store = StatusStore(tmp_path)
    feedback = ClusterFeedback(store, ledger, audit, registry, notes)
    handler = ArgoCDHookHandler(Secret(SECRET), store, feedback)
    return {"handler": handler, "registry": registry, "notes": notes, "audit": audit}


def _post(handler: ArgoCDHookHandler, event: str, app: dict[str, Any],
          token: str | None = SECRET) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Promoter-Token"] = token
    return handler.handle(headers, notification(event, app))


def _plain(markdown: str) -> str:
    """A note as GitLab displays it (promoter escapes outside text for markdown)."""
    return markdown.replace("\\", "").replace("\u200b", "")


def _audit(trail: AuditTrail) -> list[dict[str, Any]]:
    return [json.loads(line) for line in trail.path.read_text().splitlines()]


def test_two_clusters_synced_and_healthy_make_the_version_deployed(parts: dict) -> None:
    handler, registry, notes = parts["handler"], parts["registry"], parts["notes"]
    status, answer = _post(handler, "sync-succeeded",
                           application("fraud-detector", "production", "gpu-eu-1"))
    assert (status, answer["status"], answer["deployed"]) == (200, "recorded", True)
    _post(handler, "sync-succeeded", application("fraud-detector", "production", "gpu-us-1",
                                                 health="Progressing",
                                                 reconciled_at="2024-03-05T07:34:00Z"))
    tags = registry.tags[("Fraud Detector", "7")]
    assert tags["promoter.production.health"] == "Progressing"
    # Deployed on the one cluster that had reported; back to merged while the second syncs.
    assert tags["promoter.production.status"] == "merged"
    status, answer = _post(handler, "health-healthy",
                           application("fraud-detector", "production", "gpu-us-1",
                                       reconciled_at="2024-03-05T07:35:00Z"))
    assert answer["deployed"] is True
    assert tags["promoter.production.sync"] == "Synced"
    assert tags["promoter.production.health"] == "Healthy"
    assert tags["promoter.production.revision"] == REVISION
    assert tags["promoter.production.synced_at"] == "2024-03-05T07:35:00Z"
    assert tags["promoter.production.status"] == "deployed"
    note = _plain(notes.notes[(3, "Argo CD status")])
    assert note.startswith("synced to gpu-eu-1, gpu-us-1; healthy")
    entries = [e for e in _audit(parts["audit"]) if e["event"] == "argocd.status"]
    assert len(entries) == 3 and entries[-1]["deployed"] is True
    assert entries[-1]["actor"] == "argocd:fraud-detector-production-gpu-us-1"


def test_while_a_newer_version_is_proposed_the_clusters_status_is_told_of_the_live_one(
        tmp_path: Path) -> None:
    """Version 8's MR is open (or was closed): the clusters still run 7, so their health
    belongs on 7 in MLflow and in the audit trail, not on 8, which runs nowhere."""
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="8", status="mr_opened", mr_iid=4, head_sha="b" * 40))
    registry, audit, store = RecordingRegistry(), AuditTrail(tmp_path), StatusStore(tmp_path)
    registry.live[("Fraud Detector", "production")] = "7"
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, audit, registry, Notes(), MergeRequests()))   # !4 is open
    _post(handler, "health-degraded", application("fraud-detector", "production", "gpu-eu-1",
                                                  health="Degraded"))
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.health"] == "Degraded"
    assert ("Fraud Detector", "8") not in registry.tags
    [entry] = [e for e in _audit(audit) if e["event"] == "argocd.status"]
    assert entry["version"] == "7"


def test_a_version_merged_with_a_foreign_head_is_never_told_deployed(
        parts: dict, tmp_path: Path) -> None:
    """Its MR was merged with a head someone else pushed (status merged_unverified): Argo CD
    syncing the target branch says nothing about the version promoter checked."""
    StateLedger(tmp_path).set_status("fraud-detector", "production", "merged_unverified")
    status, answer = _post(parts["handler"], "sync-succeeded",
                           application("fraud-detector", "production", "gpu-eu-1"))
    tags = parts["registry"].tags[("Fraud Detector", "7")]
    assert tags["promoter.production.sync"] == "Synced"
    assert tags["promoter.production.health"] == "Healthy"
    assert tags["promoter.production.status"] == "merged_unverified"
    # The audit trail, the MR note and the answer tell the same: synced, not deployed.
    assert (status, answer["deployed"]) == (200, False)
    (entry,) = [e for e in _audit(parts["audit"]) if e["event"] == "argocd.status"]
    assert (entry["version"], entry["deployed"], entry["unverified"]) == ("7", False, True)
    note = _plain(parts["notes"].notes[(3, "Argo CD status")])
    assert note.startswith("synced to gpu-eu-1; healthy\n")
    assert "version 7 is not marked deployed: its merge request was merged with a head " \
        "promoter did not write (status merged_unverified)" in note


class ChangedWhileJudging(StatusStore):
    """The state database as another replica changes the ledger (``change``) right after the
    first observation was judged, before it is told: an MR hook recording a merge, or a new
    promotion opening its MR."""

    def __init__(self, path: Path, change: Callable[[], None]) -> None:
        super().__init__(path)
        self.change, self.changed = change, False

    def record(self, *args: Any, **kwargs: Any) -> Any:
        judged = super().record(*args, **kwargs)
        if not self.changed:
            self.changed = True
            self.change()
        return judged


def test_a_foreign_merge_recorded_while_telling_is_never_told_deployed(tmp_path: Path) -> None:
    """The foreign merge lands between the judging (which read the ledger as merged) and the
    telling: what is told is the ledger's newer word, in MLflow, the audit trail and the note,
    and the drain does not tell it again."""
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    registry, notes, audit = RecordingRegistry(), Notes(), AuditTrail(tmp_path)
    store = ChangedWhileJudging(tmp_path, lambda: ledger.set_status(
        "fraud-detector", "production", "merged_unverified"))
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, audit, registry, notes))
    status, answer = _post(handler, "sync-succeeded",
                           application("fraud-detector", "production", "gpu-eu-1"))
    assert store.changed
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == \
        "merged_unverified"
    assert (status, answer["deployed"]) == (200, False)
    (entry,) = [e for e in _audit(audit) if e["event"] == "argocd.status"]
    assert (entry["deployed"], entry["unverified"]) == (False, True)
    assert "version 7 is not marked deployed" in _plain(notes.notes[(3, "Argo CD status")])


class _OutcomeWhileTelling(RecordingRegistry):
    """MLflow as the MR outcome handler (another replica's hook, or the sweep) records a merge
    with a foreign head while the Argo CD status is being told: it writes MLflow first, the
    ledger last (promoter.service.outcomes), both before the telling's own write lands."""

    def __init__(self, ledger: StateLedger) -> None:
        super().__init__()
        self.ledger, self.recorded = ledger, False

    def write_back(self, model: str, version: str, env: str, values: Mapping[str, str]) -> None:
        if not self.recorded:
            self.recorded = True
            super().write_back(model, version, env, {"status": "merged_unverified"})
            self.ledger.set_status("fraud-detector", "production", "merged_unverified")
        super().write_back(model, version, env, values)


def _approved_and_merged_on_the_forge(tmp_path: Path, registry: RecordingRegistry | None = None,
                                      store: StatusStore | None = None,
                                      ) -> tuple[ArgoCDHookHandler, StateLedger, AuditTrail]:
    """The forge says MR !3 is merged at REVISION; promoter has not recorded the outcome yet
    (the ledger still says approved): the MR hook is late, or being handled right now."""
    handler, _, ledger, audit = _merged_unrecorded(tmp_path, registry, store)
    return handler, ledger, audit


def _merged_unrecorded(tmp_path: Path, registry: RecordingRegistry | None = None,
                       store: StatusStore | None = None
                       ) -> tuple[ArgoCDHookHandler, ClusterFeedback, StateLedger, AuditTrail]:
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="approved", mr_iid=3, head_sha="a" * 40))
    mrs, audit = MergeRequests(), AuditTrail(tmp_path)
    mrs.state, mrs.merge_commit = "merged", REVISION
    store = store or StatusStore(tmp_path)
    feedback = ClusterFeedback(store, ledger, audit, registry or RecordingRegistry(), Notes(),
                               mrs)
    return ArgoCDHookHandler(Secret(SECRET), store, feedback), feedback, ledger, audit


def _record_the_merge(tmp_path: Path, registry: RecordingRegistry, ledger: StateLedger,
                      audit: AuditTrail, feedback: ClusterFeedback) -> None:
    """MR !3's verified merge recorded by the outcomes handler, wired as composition does."""
    from promoter.core.mr_events import MergeRequestEvent
    from promoter.service.outcomes import MergeRequestOutcomes
    from promoter.state.pushed_heads import PushedHeads

    outcomes = MergeRequestOutcomes(
        registry, ledger, audit, PushedHeads(tmp_path),  # type: ignore[arg-type]
        after_merge=lambda name, env: feedback.after_merge(name, env, actor="promoter"))
    outcomes(MergeRequestEvent(
        action="merge", project_id=0, project_path="local", iid=3, state="merged",
        source_branch="promote/fraud-detector/production", target_branch="main",
        head_sha="a" * 40, url="local:!3", user="alice", name="fraud-detector",
        env="production", merge_commit_sha=REVISION))


def test_a_foreign_merge_recorded_while_telling_leaves_merged_unverified_in_mlflow(
        tmp_path: Path) -> None:
    """The outcome handler tags the version merged_unverified between the telling's ledger
    read and its MLflow write: the telling must not overwrite that with deployed, and the next
    observation tells merged_unverified."""
    registry = _OutcomeWhileTelling(StateLedger(tmp_path))
    handler, _, audit = _approved_and_merged_on_the_forge(tmp_path, registry)
    status, answer = _post(handler, "sync-succeeded",
                           application("fraud-detector", "production", "gpu-eu-1"))
    tags = registry.tags[("Fraud Detector", "7")]
    assert registry.recorded and (status, answer["deployed"]) == (200, False)
    assert tags["promoter.production.status"] == "merged_unverified"
    _post(handler, "health-healthy", application("fraud-detector", "production", "gpu-eu-1",
                                                 reconciled_at="2024-03-05T07:40:00Z"))
    assert tags["promoter.production.status"] == "merged_unverified"
    assert [(e["deployed"], e["unverified"]) for e in _audit(audit)
            if e["event"] == "argocd.status"] == [(False, False), (False, True)]


def test_a_merge_the_forge_reports_before_promoter_records_it_is_not_yet_deployed(
        tmp_path: Path) -> None:
    """Argo CD syncs the merge before the MR hook (or the sweep) recorded it: the merge may
    turn out foreign, so the version is deployed only once promoter recorded it as merged."""
    registry = RecordingRegistry()
    handler, ledger, _ = _approved_and_merged_on_the_forge(tmp_path, registry)
    _, answer = _post(handler, "sync-succeeded",
                      application("fraud-detector", "production", "gpu-eu-1"))
    assert answer["deployed"] is False
    assert "promoter.production.status" not in registry.tags[("Fraud Detector", "7")]
    ledger.set_status("fraud-detector", "production", "merged")   # the sweep, verified
    _, answer = _post(handler, "health-healthy", application(
        "fraud-detector", "production", "gpu-eu-1", reconciled_at="2024-03-05T07:40:00Z"))
    assert answer["deployed"] is True
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"


def test_a_merge_recorded_after_argo_cd_synced_it_is_told_deployed_at_once(
        tmp_path: Path) -> None:
    """Argo CD synced the merged revision and reported it before promoter recorded the merge
    (a late hook, the sweep), and sends nothing more (no change on its side): recording the
    verified merge judges the stored status again and tells deployed without waiting."""
    registry = RecordingRegistry()
    handler, feedback, ledger, audit = _merged_unrecorded(tmp_path, registry)
    _, answer = _post(handler, "sync-succeeded",
                      application("fraud-detector", "production", "gpu-eu-1"))
    assert answer["deployed"] is False

    _record_the_merge(tmp_path, registry, ledger, audit, feedback)

    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"
    told = [e for e in _audit(audit) if e["event"] == "argocd.status"]
    assert (told[-1]["deployed"], told[-1]["actor"]) == (True, "promoter")


def test_a_merge_recorded_with_no_argo_cd_status_stored_tells_nothing(tmp_path: Path) -> None:
    """Argo CD never reported (or is not used): the merge tells no "unknown" status."""
    registry = RecordingRegistry()
    _, feedback, ledger, audit = _merged_unrecorded(tmp_path, registry)
    _record_the_merge(tmp_path, registry, ledger, audit, feedback)
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "merged"
    assert not [e for e in _audit(audit) if e["event"] == "argocd.status"]


def test_a_deployed_told_before_the_foreign_merge_was_recorded_is_corrected(
        tmp_path: Path) -> None:
    """MLflow holds deployed for a version whose merge the ledger now records as foreign
    (told by an earlier promoter, or before the outcome): the next telling corrects it."""
    registry = RecordingRegistry()
    registry.tags[("Fraud Detector", "7")] = {"promoter.production.status": "deployed"}
    handler, ledger, _ = _approved_and_merged_on_the_forge(tmp_path, registry)
    ledger.set_status("fraud-detector", "production", "merged_unverified")
    _post(handler, "sync-succeeded", application("fraud-detector", "production", "gpu-eu-1"))
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == \
        "merged_unverified"


class OnlyThreeMerged(MergeRequests):
    """!3 merged at REVISION; every other MR open."""

    def get(self, iid: int) -> MergeRequest:
        self.state, self.merge_commit = ("merged", REVISION) if iid == 3 else ("opened", None)
        return super().get(iid)


def test_a_status_judged_on_one_mr_is_never_told_of_the_next_version(tmp_path: Path) -> None:
    """Judged deployed against !3's merge, told after !4 took the ledger row: what is told is
    judged on !4 (open), so version 8 is not tagged at all (no cluster runs it) and 7's
    health is told without a status."""
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    registry, audit = RecordingRegistry(), AuditTrail(tmp_path)
    registry.live[("Fraud Detector", "production")] = "7"   # !3's merge, recorded
    mrs = OnlyThreeMerged()
    store = ChangedWhileJudging(tmp_path, lambda: ledger.put(DeployedState(
        model="Fraud Detector", env="production", name="fraud-detector", version="8",
        status="mr_opened", mr_iid=4, head_sha="b" * 40)))
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, audit, registry, Notes(), mrs))
    _, answer = _post(handler, "sync-succeeded",
                      application("fraud-detector", "production", "gpu-eu-1"))
    assert store.changed and answer["deployed"] is False
    # Version 8 runs nowhere yet: nothing is told of it; what is told is of 7, still live.
    assert ("Fraud Detector", "8") not in registry.tags
    assert "promoter.production.status" not in registry.tags[("Fraud Detector", "7")]
    assert [(e["version"], e["deployed"]) for e in _audit(audit)
            if e["event"] == "argocd.status"] == [("7", False)]


def test_deployed_only_at_a_revision_that_carries_the_merged_mr(tmp_path: Path) -> None:
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    registry, forge, mrs = RecordingRegistry(), Notes(), MergeRequests()
    store = StatusStore(tmp_path)
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, AuditTrail(tmp_path), registry, forge, mrs))

    def report(reconciled_at: str) -> dict[str, Any]:
        return _post(handler, "sync-succeeded", application(
            "fraud-detector", "production", "gpu-eu-1", reconciled_at=reconciled_at))[1]

    assert report("2024-03-05T08:00:00Z")["deployed"] is False    # the MR is not merged yet
    mrs.state, mrs.merge_commit = "merged", "c" * 40
    assert report("2024-03-05T08:01:00Z")["deployed"] is False    # synced to an older revision
    mrs.merge_commit = REVISION
    assert report("2024-03-05T08:02:00Z")["deployed"] is True     # at the merge commit
    mrs.merge_commit, forge.history[REVISION] = "c" * 40, {"c" * 40}
    assert report("2024-03-05T08:03:00Z")["deployed"] is True     # at a later commit
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"


class GoneMergeRequests(MergeRequests):
    """The MR was deleted (or lives on another provider): the forge answers 404."""

    def get(self, iid: int) -> MergeRequest:
        raise NotFoundError(f"!{iid} not found")


class HeadlessMergeRequests(MergeRequests):
    """A merged MR whose answer names no commit (no merge, squash or head sha)."""

    def get(self, iid: int) -> MergeRequest:
        return MergeRequest(iid=iid, id=iid, url=f"local:!{iid}", state="merged",
                            source_branch="promote/fraud-detector/production",
                            target_branch="main", title="t", head_sha=None)


PRE_MERGE, PUSHED = "1" * 40, "b" * 40   # HEAD before version 8's merge (runs 7); 8's head


def _version_8_merged(tmp_path: Path, merge_requests: MergeRequests, mr_iid: int | None = 4,
                      ) -> tuple[ArgoCDHookHandler, RecordingRegistry, Notes]:
    """Version 8 recorded merged (verified) as !4, whose head promoter pushed: PUSHED."""
    from promoter.state.pushed_heads import PushedHeads

    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="8", status="merged", mr_iid=mr_iid, head_sha=PUSHED))
    if mr_iid is not None:
        PushedHeads(tmp_path).record(0, mr_iid, "promote/fraud-detector/production", PUSHED,
                                     "8", "Fraud Detector")
    registry, forge, store = RecordingRegistry(), Notes(), StatusStore(tmp_path)
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, AuditTrail(tmp_path), registry, forge, merge_requests))
    return handler, registry, forge


@pytest.mark.parametrize("merge_requests", [GoneMergeRequests(), HeadlessMergeRequests()],
                         ids=["mr-gone", "no-commit-named"])
def test_an_mr_the_forge_cannot_name_the_merge_of_is_judged_by_promoters_pushed_head(
        tmp_path: Path, merge_requests: MergeRequests) -> None:
    """A cluster still at the pre-merge HEAD runs version 7: agreeing clusters used to be
    enough when the MR could not be read, and 8 was tagged deployed. The head promoter pushed
    (and recorded) for !4 stands in for the merge: deployed only at a revision carrying it."""
    handler, registry, forge = _version_8_merged(tmp_path, merge_requests)
    status, answer = _post(handler, "health-healthy", application(
        "fraud-detector", "production", "gpu-eu-1", revision=PRE_MERGE))
    assert (status, answer["status"], answer["deployed"]) == (200, "recorded", False)
    assert "promoter.production.status" not in registry.tags[("Fraud Detector", "8")]
    merged = "c" * 40   # the merge commit: its parents are PRE_MERGE and PUSHED
    forge.history[merged] = {PRE_MERGE, PUSHED}
    _, answer = _post(handler, "sync-succeeded", application(
        "fraud-detector", "production", "gpu-eu-1", revision=merged,
        reconciled_at="2024-03-05T08:00:00Z"))
    assert answer["deployed"] is True
    assert registry.tags[("Fraud Detector", "8")]["promoter.production.status"] == "deployed"


def test_a_merge_with_no_mr_and_no_head_recorded_is_never_judged_deployed(
        tmp_path: Path) -> None:
    """No MR known (the target branch held the version already) and so no head: promoter
    cannot tell which commit carries the change, and clusters agreeing on one revision do not
    say they run it."""
    handler, registry, _ = _version_8_merged(tmp_path, MergeRequests(), mr_iid=None)
    status, answer = _post(handler, "health-healthy", application(
        "fraud-detector", "production", "gpu-eu-1", revision=PRE_MERGE))
    assert (status, answer["deployed"], answer["environment_health"]) == (200, False, "Healthy")
    assert "promoter.production.status" not in registry.tags[("Fraud Detector", "8")]


def _told_deployed_then_left_without_its_mr(
        tmp_path: Path) -> tuple[ArgoCDHookHandler, RecordingRegistry, Notes]:
    """Version 8 merged as !4 (fast-forward at PUSHED) and told deployed there; then its row
    is written with no MR, as a re-run or an old row leaves it: promoter names no carrier."""
    mrs = MergeRequests()
    mrs.state, mrs.merge_commit = "merged", PUSHED
    handler, registry, forge = _version_8_merged(tmp_path, mrs)
    _, answer = _post(handler, "sync-succeeded", application(
        "fraud-detector", "production", "gpu-eu-1", revision=PUSHED))
    assert answer["deployed"] is True
    StateLedger(tmp_path).put(DeployedState(model="Fraud Detector", env="production",
                                            name="fraud-detector", version="8",
                                            status="merged", mr_iid=None))
    return handler, registry, forge


def test_a_deployed_version_is_not_taken_back_only_because_no_carrier_is_named(
        tmp_path: Path) -> None:
    """Version 8 was told deployed; a re-run found the target branch holding it and recorded
    it with no MR (as promoter did before the row kept the merged MR): the next report on the
    very revision it runs used to write merged over deployed, and 8 never got back to
    deployed. Promoter still does not claim deployed, and takes nothing back either."""
    handler, registry, _ = _told_deployed_then_left_without_its_mr(tmp_path)
    _, answer = _post(handler, "sync-succeeded", application(
        "fraud-detector", "production", "gpu-eu-1", revision=PUSHED,
        reconciled_at="2024-03-05T09:00:00Z"))
    assert answer["deployed"] is False
    assert registry.tags[("Fraud Detector", "8")]["promoter.production.status"] == "deployed"
    _, answer = _post(handler, "health-degraded", application(   # a real fall is still told
        "fraud-detector", "production", "gpu-eu-1", revision=PUSHED, health="Degraded",
        reconciled_at="2024-03-05T10:00:00Z"))
    assert registry.tags[("Fraud Detector", "8")]["promoter.production.status"] == "merged"


@pytest.mark.parametrize(("revision", "status"), [(PUSHED, "deployed"),
                                               ("d" * 40, "deployed"),
                                               (PRE_MERGE, "merged")],
                         ids=["at-the-told-revision", "at-a-later-commit-of-the-branch",
                              "pinned-back-to-the-pre-merge-revision"])
def test_with_no_carrier_named_deployed_stands_only_at_the_revision_it_was_told_at(
        tmp_path: Path, revision: str, status: str) -> None:
    """Version 8 told deployed at PUSHED; the row then holds no MR and no head (an old row, a
    deleted MR). The Application pinned back to PRE_MERGE (running 7) reports Synced and
    Healthy: the clusters agree, but not on the revision `deployed` was told at, so 8 is set
    back to merged (it used to stay deployed while 7 ran). At PUSHED itself, or at a later
    commit of the branch that contains it (Argo CD moves on with every commit), it stands."""
    handler, registry, forge = _told_deployed_then_left_without_its_mr(tmp_path)
    forge.history["d" * 40] = {PRE_MERGE, PUSHED}
    _, answer = _post(handler, "sync-succeeded", application(
        "fraud-detector", "production", "gpu-eu-1", revision=revision,
        reconciled_at="2024-03-05T09:00:00Z"))
    tags = registry.tags[("Fraud Detector", "8")]
    assert answer["deployed"] is False
    assert (tags["promoter.production.status"], tags["promoter.production.revision"]) == (
        status, revision)


def test_the_alias_moved_back_keeps_the_merged_mr_so_the_version_stays_deployed(
        tmp_path: Path) -> None:
    """Version 2 merged and deployed; 3's MR open; the alias moves back to 2: 3's MR is
    withdrawn, main holds 2 already. The ledger row kept no MR, so Argo CD's next report on
    the revision running 2 judged it never deployed and wrote merged over deployed. The row
    now keeps !1, whose merge carries 2 (real git, local provider)."""
    from tests.core.test_pipeline import MODEL
    from tests.test_gc import _merged, _recorded

    provider, ledger, audit, registry, world = _recorded(tmp_path, "2", "3")
    first = world.promote("2")
    _merged(provider, first.mr_iid)
    store = StatusStore(tmp_path / "state")
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, audit, registry, provider.forge, provider))
    main = provider.forge.branch_head("main")

    def report(reconciled_at: str) -> bool:
        answer = _post(handler, "sync-succeeded", application(
            "fraud-detector", "production", "gpu-eu-1", revision=main,
            reconciled_at=reconciled_at))[1]
        return bool(answer["deployed"])

    assert report("2024-03-05T08:00:00Z") is True
    world.promote("3")
    back = world.promote("2")
    assert back.outcome is not None and back.outcome.value == "unchanged"
    assert back.closed_mr is not None and back.mr_iid is None    # 3's MR withdrawn
    row = ledger.get(MODEL, "production")
    assert (row.version, row.status, row.mr_iid) == ("2", "merged", first.mr_iid)
    assert report("2024-03-05T09:00:00Z") is True
    assert registry.tags(MODEL, "2")["promoter.production.status"] == "deployed"


def test_deployed_once_every_cluster_synced_a_revision_containing_the_merge(
        tmp_path: Path) -> None:
    """Cluster a syncs at the merge commit; another model's merge moves HEAD; cluster b syncs
    at the new HEAD. Argo CD sends nothing more, so this notification must say deployed."""
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    registry, forge, mrs = RecordingRegistry(), Notes(), MergeRequests()
    mrs.state, mrs.merge_commit = "merged", REVISION
    later = "d" * 40
    forge.history[later] = {REVISION}
    store = StatusStore(tmp_path)
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, AuditTrail(tmp_path), registry, forge, mrs))
    _post(handler, "sync-succeeded", application("fraud-detector", "production", "gpu-eu-1"))
    status, answer = _post(handler, "sync-succeeded", application(
        "fraud-detector", "production", "gpu-us-1", revision=later,
        reconciled_at="2024-03-05T07:40:00Z"))
    assert (status, answer["deployed"]) == (200, True)
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"


def test_degraded_cluster_is_reported_and_not_deployed(parts: dict) -> None:
    handler, registry = parts["handler"], parts["registry"]
    _post(handler, "sync-succeeded", application("fraud-detector", "production", "gpu-eu-1"))
    status, answer = _post(handler, "health-degraded", application(
        "fraud-detector", "production", "gpu-us-1", health="Degraded"))
    assert status == 200 and answer["deployed"] is False
    assert answer["environment_health"] == "Degraded"
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.health"] == "Degraded"
    assert "degraded" in _plain(parts["notes"].notes[(3, "Argo CD status")]).splitlines()[0]
    assert "degraded" in parts["notes"].notes[(3, "Argo CD status")].splitlines()[0]


def test_a_healthy_report_retried_after_a_degraded_one_of_one_refresh_is_not_deployed(
        parts: dict) -> None:
    # One reconciledAt for both (Argo CD bumps it only on a comparison with git); the
    # Degraded report arrives first, the earlier Healthy one last (retried after a 503):
    # the health change times order them.
    handler, registry = parts["handler"], parts["registry"]
    degraded = application("fraud-detector", "production", "gpu-eu-1", health="Degraded",
                           health_changed_at="2024-03-05T07:40:00Z")
    assert _post(handler, "health-degraded", degraded)[1]["deployed"] is False
    status, answer = _post(handler, "health-healthy", application(
        "fraud-detector", "production", "gpu-eu-1", health_changed_at="2024-03-05T07:33:04Z"))
    assert (status, answer["deployed"], answer["environment_health"]) == \
        (200, False, "Degraded")
    assert "promoter.production.status" not in registry.tags[("Fraud Detector", "7")]


def test_healthy_again_within_one_refresh_is_not_taken_for_a_redelivery(parts: dict) -> None:
    handler, registry = parts["handler"], parts["registry"]
    for health, changed in (("Healthy", "2024-03-05T07:33:04Z"),
                            ("Degraded", "2024-03-05T07:40:00Z"),
                            ("Healthy", "2024-03-05T07:45:00Z")):
        status, answer = _post(handler, f"health-{health.lower()}", application(
            "fraud-detector", "production", "gpu-eu-1", health=health,
            health_changed_at=changed))
        assert (status, answer["status"], answer["environment_health"]) == \
            (200, "recorded", health)
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.health"] == "Healthy"


def test_healthy_again_within_one_refresh_without_a_health_time_is_told(parts: dict) -> None:
    """Argo CD often sends no health time (status.health.lastTransitionTime): Healthy again
    under the first report's reconciledAt is that first report byte for byte, and was dropped
    as its re-delivery, leaving MLflow, the note and the audit trail Degraded for good (Argo CD
    notifies once per change). A re-delivery of what is stored stays a duplicate."""
    handler, registry, notes = parts["handler"], parts["registry"], parts["notes"]
    answers = [_post(handler, f"health-{health.lower()}", application(
        "fraud-detector", "production", "gpu-eu-1", health=health))
        for health in ("Healthy", "Degraded", "Healthy")]
    assert [(status, answer["status"], answer["environment_health"], answer["deployed"])
            for status, answer in answers] == [(200, "recorded", "Healthy", True),
                                               (200, "recorded", "Degraded", False),
                                               (200, "recorded", "Healthy", True)]
    tags = registry.tags[("Fraud Detector", "7")]
    assert (tags["promoter.production.health"], tags["promoter.production.status"]) == \
        ("Healthy", "deployed")
    assert _plain(notes.notes[(3, "Argo CD status")]).startswith("synced to gpu-eu-1; healthy")
    assert _post(handler, "health-healthy", application(
        "fraud-detector", "production", "gpu-eu-1"))[1]["status"] == "duplicate"
    assert [e["health"] for e in _audit(parts["audit"]) if e["event"] == "argocd.status"] == \
        ["Healthy", "Degraded", "Healthy"]


def test_a_report_seen_before_and_failed_when_handled_again_is_handled_on_its_retry(
        parts: dict) -> None:
    """Healthy again (the first report's key) meets MLflow down: the 503's retry is handled,
    not answered duplicate, so the change is not lost with the failed telling."""
    handler, registry = parts["handler"], parts["registry"]
    for health in ("Healthy", "Degraded"):
        _post(handler, f"health-{health.lower()}", application(
            "fraud-detector", "production", "gpu-eu-1", health=health))
    healthy = application("fraud-detector", "production", "gpu-eu-1")
    registry.down = True
    assert _post(handler, "health-healthy", healthy)[0] == 503
    registry.down = False
    status, answer = _post(handler, "health-healthy", healthy)
    assert (status, answer["status"], answer["deployed"]) == (200, "recorded", True)
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"


def test_a_late_redelivery_of_an_older_report_changes_nothing(parts: dict) -> None:
    """Handled again because the stored row moved on, an older report (older reconciledAt)
    still does not replace the newer row: nothing is told."""
    handler, registry = parts["handler"], parts["registry"]
    healthy = application("fraud-detector", "production", "gpu-eu-1")
    _post(handler, "health-healthy", healthy)
    _post(handler, "health-degraded", application(
        "fraud-detector", "production", "gpu-eu-1", health="Degraded",
        reconciled_at="2024-03-05T07:40:00Z"))
    status, answer = _post(handler, "health-healthy", healthy)
    assert (status, answer["environment_health"], answer["deployed"]) == \
        (200, "Degraded", False)
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.health"] == "Degraded"
    assert len([e for e in _audit(parts["audit"]) if e["event"] == "argocd.status"]) == 2


def test_a_deleted_application_stops_its_cluster_counting(tmp_path: Path) -> None:
    """A cluster loses its label: the ApplicationSet deletes its Application, and Argo CD's
    deleted notification removes its row, so later versions are judged without it."""
    first, second = "1" * 40, "2" * 40
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    merge_requests, notes, registry = MergeRequests(), Notes(), RecordingRegistry()
    merge_requests.state, merge_requests.merge_commit = "merged", first
    notes.history[second] = {first}
    store = StatusStore(tmp_path)
    handler = ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, AuditTrail(tmp_path), registry, notes, merge_requests))

    def app(cluster: str, revision: str, at: str) -> dict[str, Any]:
        return application("fraud-detector", "production", cluster, revision=revision,
                           reconciled_at=at)

    for cluster in ("gpu-old", "gpu-eu-1"):
        _post(handler, "health-healthy", app(cluster, first, "2024-03-05T07:00:00Z"))
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="8", status="merged", mr_iid=4, head_sha="b" * 40))
    merge_requests.merge_commit = second
    assert _post(handler, "health-healthy",
                 app("gpu-eu-1", second, "2024-03-05T08:00:00Z"))[1]["deployed"] is False
    # A deleted notification older than the row stored is ignored, as any older report.
    stale = app("gpu-eu-1", first, "2024-03-05T07:00:00Z")
    assert _post(handler, "deleted", stale)[0] == 200
    assert [r.cluster for r in store.rows("fraud-detector", "production")] == \
        ["gpu-eu-1", "gpu-old"]
    status, answer = _post(handler, "deleted", app("gpu-old", first, "2024-03-05T07:00:00Z"))
    assert (status, answer["status"], answer["deployed"]) == (200, "recorded", True)
    assert [r.cluster for r in store.rows("fraud-detector", "production")] == ["gpu-eu-1"]
    assert registry.tags[("Fraud Detector", "8")]["promoter.production.status"] == "deployed"


def test_bad_or_missing_secret_is_401_and_changes_nothing(parts: dict) -> None:
    app = application("fraud-detector", "production", "gpu-eu-1")
    assert _post(parts["handler"], "sync-succeeded", app, token="wrong")[0] == 401
    assert _post(parts["handler"], "sync-succeeded", app, token=None)[0] == 401
    assert parts["registry"].tags == {}


def test_server_without_a_secret_refuses_with_503(tmp_path: Path, parts: dict) -> None:
    store = StatusStore(tmp_path / "x")
    handler = ArgoCDHookHandler(None, store, ClusterFeedback(
        store, StateLedger(tmp_path / "x"), AuditTrail(tmp_path / "x")))
    status, answer = _post(handler, "sync-succeeded",
                           application("fraud-detector", "production", "gpu-eu-1"))
    assert status == 503 and "PROMOTER_ARGOCD_WEBHOOK_SECRET" in answer["detail"]


def test_redelivery_is_a_duplicate_and_writes_nothing_twice(parts: dict) -> None:
    app = application("fraud-detector", "production", "gpu-eu-1")
    assert _post(parts["handler"], "sync-succeeded", app)[1]["status"] == "recorded"
    assert _post(parts["handler"], "sync-succeeded", app)[1]["status"] == "duplicate"
    assert len([e for e in _audit(parts["audit"]) if e["event"] == "argocd.status"]) == 1


def test_mlflow_down_is_503_and_the_retry_is_processed(parts: dict) -> None:
    parts["registry"].down = True
    app = application("fraud-detector", "production", "gpu-eu-1")
    assert _post(parts["handler"], "sync-succeeded", app)[0] == 503
    parts["registry"].down = False
    status, answer = _post(parts["handler"], "sync-succeeded", app)
    assert (status, answer["status"]) == (200, "recorded")
    assert parts["registry"].tags[("Fraud Detector", "7")]["promoter.production.status"] == \
        "deployed"


def test_a_change_whose_write_back_is_retried_is_audited_once(parts: dict) -> None:
    parts["registry"].down = True
    app = application("fraud-detector", "production", "gpu-eu-1")
    for _ in range(3):   # Argo CD retries the 503s
        assert _post(parts["handler"], "health-healthy", app)[0] == 503
    parts["registry"].down = False
    assert _post(parts["handler"], "health-healthy", app)[0] == 200
    events = [entry["event"] for entry in _audit(parts["audit"])]
    # Each failed attempt is its own write_back.failed; the change is told once.
    assert events == ["write_back.failed"] * 3 + ["argocd.status"]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"event": "sync-succeeded"}',
                                  b'{"event": "rollout", "model": "m", "environment": "e",'
                                  b' "application": "a"}'])
def test_malformed_bodies_are_400(parts: dict, body: bytes) -> None:
    status, _ = parts["handler"].handle({"X-Promoter-Token": SECRET}, body)
    assert status == 400


@pytest.mark.parametrize("reconciled_at", ["0001-01-01T00:00:00+01:00",
                                           "0999-01-01T00:00:00Z"])
def test_an_implausible_reconciled_at_is_a_400_and_blocks_no_later_report(
        parts: dict, reconciled_at: str) -> None:
    """The first overflowed converting to UTC (a 500, retried by Argo CD for good); the second
    was stored as '999-01-01…', which sorts after every real time, so no later report of the
    cluster was ever taken."""
    status, answer = _post(parts["handler"], "health-degraded", application(
        "fraud-detector", "production", "gpu-eu-1", health="Degraded",
        reconciled_at=reconciled_at))
    assert status == 400 and "reconciledAt must be an RFC 3339 time" in answer["detail"], answer
    status, answer = _post(parts["handler"], "health-healthy", application(
        "fraud-detector", "production", "gpu-eu-1", reconciled_at="2030-01-01T00:00:00Z"))
    assert (status, answer["environment_health"], answer["deployed"]) == (200, "Healthy", True)


@pytest.mark.parametrize(("cluster", "says"), [
    ("gpu\\ud800", "surrogate"),             # decodes to text UTF-8 cannot encode
    ("gpu\\u0000x", "control characters"),   # PostgreSQL text cannot hold a NUL
    ("gpu\\u202eue-1", "control characters")])
def test_a_field_no_store_or_note_can_take_is_a_400_naming_it(parts: dict, cluster: str,
                                                              says: str) -> None:
    """An authentic body (the token matches) with such a field used to fail where it was
    stored: a 500, or on PostgreSQL a 503 Argo CD retried for good."""
    body = ('{"event": "sync-succeeded", "model": "fraud-detector", "environment": '
            f'"production", "application": "a", "cluster": "{cluster}"}}').encode()
    status, answer = parts["handler"].handle({"X-Promoter-Token": SECRET}, body)
    assert status == 400 and says in answer["detail"], answer


def test_route_with_the_local_provider_notes_the_merge_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real endpoint, built by the composition root, over HTTP (Starlette's client)."""
    monkeypatch.setenv("PROMOTER_ARGOCD_WEBHOOK_SECRET", SECRET)
    settings = load_settings(environ={"PROMOTER_STATE_DIR": str(tmp_path),
                                      "PROMOTER_ARGOCD_WEBHOOK_SECRET": SECRET})
    app = Starlette(routes=[Route("/webhooks/argocd", argocd_hook.endpoint(settings, None),
                                  methods=["POST"])])
    body = notification("sync-succeeded", application("fraud-detector", "production", "c1"))
    with TestClient(app) as client:
        denied = client.post("/webhooks/argocd", content=body,
                             headers={"X-Promoter-Token": "nope"})
        accepted = client.post("/webhooks/argocd", content=body,
                               headers={"X-Promoter-Token": SECRET,
                                        "Content-Type": "application/json"})
    assert denied.status_code == 401
    assert accepted.status_code == 200 and accepted.json()["deployed"] is True
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert entries[-1]["event"] == "argocd.status" and entries[-1]["model"] is None


class FailingStatusStore(FailingWrites, StatusStore):
    """The Argo CD hook's store, its state database failing at one write."""


@pytest.mark.parametrize("failing", WRITES)
def test_a_state_database_failing_on_a_notification_is_503_and_not_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """Not a bug (500 "internal", logged as one) but an outage: answered as the MLflow intake
    answers a queue that cannot store, 503 "unavailable" with Retry-After, and /readyz not ready."""
    registry = RecordingRegistry()
    registry.down = failing == "release"          # a release follows a failure to tell
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    store = FailingStatusStore(tmp_path, failing)
    feedback = ClusterFeedback(store, ledger, AuditTrail(tmp_path), registry, Notes())
    monkeypatch.setattr(composition, "cluster_feedback", lambda settings, registry: feedback)
    settings = load_settings(environ={"PROMOTER_STATE_DIR": str(tmp_path / "serve"),
                                      "PROMOTER_ARGOCD_WEBHOOK_SECRET": SECRET})
    queue = JobQueue.open(settings.state_dir)
    app = create_app(settings, queue)
    body = notification("sync-succeeded", application("fraud-detector", "production", "c1"))

    try:
        answer, ready = post_then_probe(app, "/webhooks/argocd", body, {
            "X-Promoter-Token": SECRET, "Content-Type": "application/json"})
    finally:
        queue.close()
    assert_unavailable_and_not_ready(answer, ready)


def test_simultaneous_first_deliveries_build_one_handler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler is built on the first delivery; two arriving together used to build two
    (two state database pools, two GitLab providers): the second must wait for the first."""
    store = StatusStore(tmp_path)
    feedback = ClusterFeedback(store, StateLedger(tmp_path), AuditTrail(tmp_path),
                               RecordingRegistry(), Notes())
    builds: list[int] = []
    second_build = threading.Event()

    def slow_build(settings: Any, registry: Any) -> ClusterFeedback:
        builds.append(threading.get_ident())
        if len(builds) > 1:
            second_build.set()
        # The first build stays under way until a second one starts (or a second has passed),
        # so a second delivery arriving meanwhile builds its own unless something stops it.
        second_build.wait(timeout=1)
        return feedback

    monkeypatch.setattr(composition, "cluster_feedback", slow_build)
    settings = load_settings(environ={"PROMOTER_STATE_DIR": str(tmp_path),
                                      "PROMOTER_ARGOCD_WEBHOOK_SECRET": SECRET})
    app = Starlette(routes=[Route("/webhooks/argocd", argocd_hook.endpoint(settings, None),
                                  methods=["POST"])])
    headers = {"X-Promoter-Token": SECRET, "Content-Type": "application/json"}

    async def two_at_once() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return list(await asyncio.gather(*(
                client.post("/webhooks/argocd", headers=headers, content=notification(
                    "sync-succeeded", application("fraud-detector", "production", cluster)))
                for cluster in ("c1", "c2"))))

    answers = asyncio.run(two_at_once())
    assert [answer.status_code for answer in answers] == [200, 200]
    assert len(builds) == 1


class _Killed(BaseException):
    """The replica stops mid-handling (SIGKILL, OOM): no handler code runs after it."""


class _Interrupting(RecordingRegistry):
    """A registry during whose write-back something else happens (a re-delivery, a kill)."""

    def __init__(self, meanwhile: Any) -> None:
        super().__init__()
        self.meanwhile = meanwhile

    def write_back(self, model: str, version: str, env: str, values: Mapping[str, str]) -> None:
        self.meanwhile()
        super().write_back(model, version, env, values)


class _KilledAsking(MergeRequests):
    """The replica is killed while asking the forge about the MR, before storing anything."""

    def get(self, iid: int) -> MergeRequest:
        raise _Killed


def _handler(tmp_path: Path, registry: RecordingRegistry,
             merge_requests: MergeRequests | None = None,
             **deliveries: Any) -> ArgoCDHookHandler:
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    store = StatusStore(tmp_path)
    store.deliveries = HookDeliveries(store.db, DELIVERY_SOURCE, **deliveries)
    return ArgoCDHookHandler(Secret(SECRET), store, ClusterFeedback(
        store, ledger, AuditTrail(tmp_path), registry, Notes(), merge_requests))


def test_a_redelivery_while_the_first_is_handled_is_503_not_duplicate(tmp_path: Path) -> None:
    app = application("fraud-detector", "production", "gpu-eu-1")
    answers: list[tuple[int, dict[str, Any]]] = []
    again = _handler(tmp_path, RecordingRegistry())
    first = _handler(tmp_path, _Interrupting(
        lambda: answers.append(_post(again, "sync-succeeded", app))))
    assert _post(first, "sync-succeeded", app)[1]["status"] == "recorded"
    assert [(status, answer.get("error")) for status, answer in answers] == \
        [(503, "in_progress")]  # Argo CD retries a 5xx
    assert _post(again, "sync-succeeded", app)[1]["status"] == "duplicate"


def test_a_notification_whose_handler_was_killed_is_recorded_on_a_later_retry(
        tmp_path: Path) -> None:
    app = application("fraud-detector", "production", "gpu-eu-1")
    with pytest.raises(_Killed):
        _post(_handler(tmp_path, RecordingRegistry(), _KilledAsking()), "sync-succeeded", app)
    registry = RecordingRegistry()
    assert _post(_handler(tmp_path, registry), "sync-succeeded", app)[0] == 503
    later = _handler(tmp_path, registry,
                     clock=lambda: time.time() + PROCESSING_TAKEOVER_SECONDS + 1)
    status, answer = _post(later, "sync-succeeded", app)
    assert (status, answer["status"]) == (200, "recorded")
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"


class DeletedModel(RecordingRegistry):
    """MLflow after the registered model was deleted: every read or tag of it is a 404."""

    def write_back(self, model: str, version: str, env: str, values: Mapping[str, str]) -> None:
        raise NotFoundError(f"cannot tag {model!r} version {version}: MLflow answered "
                            "RESOURCE_DOES_NOT_EXIST")

    def live_version(self, model: str, env: str) -> str | None:
        raise NotFoundError("RESOURCE_DOES_NOT_EXIST")


@pytest.mark.parametrize("mr_state", ["opened", "merged"])
def test_the_status_of_a_deleted_models_removal_is_told_without_mlflow(
        tmp_path: Path, mr_state: str) -> None:
    """A deleted model's decommission (its row decommissioning) runs until Argo CD prunes the
    app: its notifications are answered, audited and told on the MR, not refused with a 503
    Argo CD would retry for good."""
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="decommissioning", mr_iid=4,
                             head_sha="b" * 40))
    notes, audit, store = Notes(), AuditTrail(tmp_path), StatusStore(tmp_path)
    merge_requests = MergeRequests()
    merge_requests.state = mr_state
    feedback = ClusterFeedback(store, ledger, audit, DeletedModel(), notes, merge_requests)
    handler = ArgoCDHookHandler(Secret(SECRET), store, feedback)
    code, answer = _post(handler, "sync-succeeded",
                         application("fraud-detector", "production", "gpu-eu-1",
                                     health="Degraded"))
    assert code == 200, answer
    assert (4, NOTE_HEADING) in notes.notes
    events = [entry["event"] for entry in _audit(audit)]
    assert "argocd.status" in events
    assert "write_back.skipped" in events
