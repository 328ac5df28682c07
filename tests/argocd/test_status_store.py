"""The last row per cluster in the state database, on SQLite and PostgreSQL: an Argo CD
observation never replaces a newer one (notifications arrive late or out of order), and a
status change is told once, even when the process telling it is killed half-way."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from promoter.core.cluster_status import ClusterStatus, from_application
from promoter.errors import TransientError
from promoter.ports.pipeline import DeployedState
from promoter.service.audit import AuditTrail
from promoter.service.cluster_feedback import ClusterFeedback
from promoter.service.cluster_status_store import TELLING_TAKEOVER_SECONDS, StatusStore
from promoter.service.ledger import StateLedger
from tests.argocd.applications import application
from tests.argocd.test_argocd_hook import RecordingRegistry, _Interrupting, _Killed
from tests.fixtures.state_backends import StateBackend


def _row(cluster: str, health: str, at: str) -> ClusterStatus:
    row = from_application(application("fraud-detector", "production", cluster, health=health,
                                       reconciled_at=at))
    assert row is not None
    return row


def _feedback(backend: StateBackend, tmp_path: Path,
              registry: RecordingRegistry | None = None,
              clock: Callable[[], float] = time.time,
              ) -> tuple[ClusterFeedback, StatusStore, RecordingRegistry]:
    """A replica (or a restarted process): its own connection to the backend's store."""
    db = backend.open()
    ledger = StateLedger(db)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    store, registry = StatusStore(db, clock=clock), registry or RecordingRegistry()
    return ClusterFeedback(store, ledger, AuditTrail(tmp_path), registry), store, registry


def _told(tmp_path: Path) -> list[dict[str, object]]:
    """The argocd.status lines of the audit trail: one per telling."""
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] == "argocd.status"]


def test_a_late_older_notification_does_not_replace_a_newer_status(
        state_backend: StateBackend, tmp_path: Path) -> None:
    feedback, store, registry = _feedback(state_backend, tmp_path)
    newer = _row("gpu-eu-1", "Healthy", "2026-01-01T10:05:00Z")
    feedback.observe("fraud-detector", "production", [newer], complete=False, actor="argocd")
    status = feedback.observe("fraud-detector", "production",
                              [_row("gpu-eu-1", "Degraded", "2026-01-01T10:00:00Z")],
                              complete=False, actor="argocd")
    assert store.rows("fraud-detector", "production") == [newer]
    assert status.deployed and status.health == "Healthy"
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.health"] == "Healthy"
    # A newer observation (and one at the same second, which arrived later) does replace it.
    later = _row("gpu-eu-1", "Degraded", "2026-01-01T10:05:00Z")
    feedback.observe("fraud-detector", "production", [later], complete=False, actor="argocd")
    assert store.rows("fraud-detector", "production") == [later]


def _changed(health: str, changed_at: str | None) -> ClusterStatus:
    row = from_application(application("fraud-detector", "production", "gpu-eu-1",
                                       health=health, reconciled_at="2026-01-01T10:00:00Z",
                                       health_changed_at=changed_at))
    assert row is not None
    return row


def test_within_one_reconciled_at_the_health_change_time_orders_observations(
        state_backend: StateBackend, tmp_path: Path) -> None:
    # Argo CD bumps reconciledAt only when it compares with git: a pod crash-looping after the
    # sync makes Degraded under the same reconciledAt, with a later lastTransitionTime.
    feedback, store, registry = _feedback(state_backend, tmp_path)
    degraded = _changed("Degraded", "2026-01-01T10:03:00Z")
    feedback.observe("fraud-detector", "production", [degraded], complete=False, actor="argocd")
    # The Healthy report from before, delivered last (Argo CD retried it after a 503).
    status = feedback.observe("fraud-detector", "production",
                              [_changed("Healthy", "2026-01-01T10:01:00Z")],
                              complete=False, actor="argocd")
    assert store.rows("fraud-detector", "production") == [degraded]
    assert not status.deployed
    assert "promoter.production.status" not in registry.tags[("Fraud Detector", "7")]
    # Healthy again, later still: it replaces the Degraded report.
    healthy = _changed("Healthy", "2026-01-01T10:09:00Z")
    status = feedback.observe("fraud-detector", "production", [healthy], complete=False,
                              actor="argocd")
    assert store.rows("fraud-detector", "production") == [healthy] and status.deployed


def test_equal_health_times_never_let_the_healthy_one_win(
        state_backend: StateBackend, tmp_path: Path) -> None:
    # Both carry one health change time, the same: nothing orders the two.
    feedback, store, registry = _feedback(state_backend, tmp_path)
    degraded = _changed("Degraded", "2026-01-01T10:01:00Z")
    feedback.observe("fraud-detector", "production", [degraded], complete=False, actor="argocd")
    status = feedback.observe("fraud-detector", "production",
                              [_changed("Healthy", "2026-01-01T10:01:00Z")],
                              complete=False, actor="argocd")
    assert store.rows("fraud-detector", "production") == [degraded] and not status.deployed
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.health"] == "Degraded"
    # The other way round a worse report does replace a Synced/Healthy one.
    at = "2026-01-01T10:00:00Z"
    healthy = from_application(application("fraud-detector", "production", "gpu-us-1",
                                            reconciled_at=at, health_changed_at=at))
    worse = from_application(application("fraud-detector", "production", "gpu-us-1",
                                          health="Progressing", reconciled_at=at,
                                          health_changed_at=at))
    assert healthy is not None and worse is not None
    feedback.observe("fraud-detector", "production", [healthy], complete=False, actor="argocd")
    feedback.observe("fraud-detector", "production", [worse], complete=False, actor="argocd")
    assert store.rows("fraud-detector", "production") == [degraded, worse]
    # The next refresh (a newer reconciledAt) settles it.
    settled = _row("gpu-eu-1", "Healthy", "2026-01-01T10:05:00Z")
    feedback.observe("fraud-detector", "production", [settled], complete=False, actor="argocd")
    assert store.rows("fraud-detector", "production")[0] == settled


@pytest.mark.parametrize(("degraded_at", "healthy_at"), [
    (None, None),                       # a template (or Argo CD) not sending the health time
    ("2026-01-01T10:01:00Z", None),     # the Healthy report without it
    (None, "2026-01-01T10:01:00Z"),     # a row stored before the column, NULL
])
def test_without_both_health_times_the_later_arrival_replaces_the_row(
        state_backend: StateBackend, tmp_path: Path,
        degraded_at: str | None, healthy_at: str | None) -> None:
    # Nothing orders the two but arrival: the later one counts, as before health times were
    # kept, so Healthy after Degraded under one reconciledAt does not stay Degraded for good.
    feedback, store, registry = _feedback(state_backend, tmp_path)
    feedback.observe("fraud-detector", "production", [_changed("Degraded", degraded_at)],
                     complete=False, actor="argocd")
    healthy = _changed("Healthy", healthy_at)
    status = feedback.observe("fraud-detector", "production", [healthy], complete=False,
                              actor="argocd")
    assert store.rows("fraud-detector", "production") == [healthy]
    assert status.deployed and status.health == "Healthy"
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"
    # And a worse report arriving later replaces the Healthy one the same way.
    worse = _changed("Degraded", degraded_at)
    status = feedback.observe("fraud-detector", "production", [worse], complete=False,
                              actor="argocd")
    assert store.rows("fraud-detector", "production") == [worse] and not status.deployed


def test_a_listing_keeps_newer_rows_and_drops_clusters_no_longer_targeted(
        state_backend: StateBackend, tmp_path: Path) -> None:
    feedback, store, _ = _feedback(state_backend, tmp_path)
    newer = _row("gpu-eu-1", "Healthy", "2026-01-01T10:05:00Z")
    feedback.observe("fraud-detector", "production",
                     [newer, _row("gpu-old-1", "Healthy", "2026-01-01T09:00:00Z")],
                     complete=False, actor="argocd")
    listed = _row("gpu-us-1", "Healthy", "2026-01-01T10:01:00Z")
    feedback.observe("fraud-detector", "production",
                     [_row("gpu-eu-1", "Progressing", "2026-01-01T10:01:00Z"), listed],
                     complete=True, actor="promoter status")
    assert store.rows("fraud-detector", "production") == [newer, listed]


def test_a_deleted_applications_cluster_does_not_come_back_with_a_late_retry(
        state_backend: StateBackend, tmp_path: Path) -> None:
    # gpu-old's Degraded report got a 5xx; meanwhile the cluster lost its label and its
    # Application was deleted. The deleted Application never reports again.
    feedback, store, _ = _feedback(state_backend, tmp_path)
    healthy = _row("gpu-eu-1", "Healthy", "2026-01-01T10:00:00Z")
    feedback.observe("fraud-detector", "production", [healthy], complete=False, actor="argocd")
    gone = _row("gpu-old", "Degraded", "2026-01-01T10:05:00Z")
    status = feedback.observe("fraud-detector", "production", [], complete=False,
                              actor="argocd", deleted=[gone])
    assert status.deployed and store.rows("fraud-detector", "production") == [healthy]
    # Argo CD's retry of the older report, and one of the deletion's own reconciledAt.
    for at in ("2026-01-01T10:04:00Z", "2026-01-01T10:05:00Z"):
        status = feedback.observe("fraud-detector", "production",
                                  [_row("gpu-old", "Degraded", at)], complete=False,
                                  actor="argocd")
        assert status.deployed and [c.cluster for c in status.clusters] == ["gpu-eu-1"]
        assert store.rows("fraud-detector", "production") == [healthy]
    # A complete listing still prunes clusters it no longer lists, and is no cluster to it.
    stale = _row("gpu-us-1", "Healthy", "2026-01-01T10:00:00Z")
    feedback.observe("fraud-detector", "production", [stale], complete=False, actor="argocd")
    listed = _row("gpu-eu-1", "Healthy", "2026-01-01T10:06:00Z")
    feedback.observe("fraud-detector", "production", [listed], complete=True,
                     actor="promoter status")
    assert store.rows("fraud-detector", "production") == [listed]
    feedback.observe("fraud-detector", "production",
                     [_row("gpu-old", "Degraded", "2026-01-01T10:04:30Z")], complete=False,
                     actor="argocd")
    assert store.rows("fraud-detector", "production") == [listed]
    # The Application re-created: its newer report counts again.
    back = _row("gpu-old", "Progressing", "2026-01-01T10:10:00Z")
    status = feedback.observe("fraud-detector", "production", [back], complete=False,
                              actor="argocd")
    assert store.rows("fraud-detector", "production") == [listed, back] and not status.deployed


def test_a_deletion_over_a_stored_row_ignores_older_reports_and_newer_rows(
        state_backend: StateBackend, tmp_path: Path) -> None:
    feedback, store, _ = _feedback(state_backend, tmp_path)
    old = _row("gpu-old", "Healthy", "2026-01-01T10:00:00Z")
    feedback.observe("fraud-detector", "production", [old], complete=False, actor="argocd")
    feedback.observe("fraud-detector", "production", [], complete=False, actor="argocd",
                     deleted=[_row("gpu-old", "Healthy", "2026-01-01T10:05:00Z")])
    assert store.rows("fraud-detector", "production") == []
    feedback.observe("fraud-detector", "production", [old], complete=False, actor="argocd")
    assert store.rows("fraud-detector", "production") == []
    # A row reported after the deletion (a re-created Application's, delivered first) stays.
    newer = _row("gpu-old", "Healthy", "2026-01-01T10:20:00Z")
    feedback.observe("fraud-detector", "production", [newer], complete=False, actor="argocd")
    feedback.observe("fraud-detector", "production", [], complete=False, actor="argocd",
                     deleted=[_row("gpu-old", "Healthy", "2026-01-01T10:05:00Z")])
    assert store.rows("fraud-detector", "production") == [newer]


def test_a_re_created_application_not_reconciled_yet_replaces_the_tombstone(
        state_backend: StateBackend, tmp_path: Path) -> None:
    """Re-created, its Application has no reconciledAt yet (`promoter status` lists it
    OutOfSync/Missing, or a notification reports it): it runs the environment again and has
    not synced, so the environment is not deployed. A tombstone kept it out before, and the
    environment was tagged deployed without it."""
    feedback, _store, _ = _feedback(state_backend, tmp_path)
    healthy = _row("gpu-eu-1", "Healthy", "2026-01-01T10:00:00Z")
    feedback.observe("fraud-detector", "production", [healthy], complete=False, actor="argocd")
    feedback.observe("fraud-detector", "production", [], complete=False, actor="argocd",
                     deleted=[_row("gpu-old", "Healthy", "2026-01-01T10:05:00Z")])
    fresh = ClusterStatus("fraud-detector", "production", "gpu-old", "OutOfSync", "Missing",
                          None, None, "fraud-detector-production-gpu-old")
    for complete, actor in ((True, "promoter status"), (False, "argocd")):
        status = feedback.observe("fraud-detector", "production", [healthy, fresh],
                                  complete=complete, actor=actor)
        assert not status.deployed
        assert [c.cluster for c in status.clusters] == ["gpu-eu-1", "gpu-old"]


class _KilledWritingBack(RecordingRegistry):
    """The process dies (SIGKILL, OOM, node loss) while writing the tags back: after the
    observation is stored, before anything is told (the audit line follows the write-back)."""

    def write_back(self, *args: object) -> None:
        raise _Killed


def test_a_status_change_whose_teller_was_killed_is_told_by_the_next_observation(
        state_backend: StateBackend, tmp_path: Path) -> None:
    row = _row("gpu-eu-1", "Healthy", "2026-01-01T10:05:00Z")
    killed, _, _ = _feedback(state_backend, tmp_path, _KilledWritingBack())
    with pytest.raises(_Killed):
        killed.observe("fraud-detector", "production", [row], complete=False, actor="argocd")

    # Another replica observing the same rows at once leaves the telling to its claimant ...
    replica, _, registry = _feedback(state_backend, tmp_path)
    replica.observe("fraud-detector", "production", [row], complete=False, actor="argocd")
    assert registry.tags == {}
    # ... which never finishes: once its claim is stale, the next observation tells it.
    restarted, _, registry = _feedback(
        state_backend, tmp_path, clock=lambda: time.time() + TELLING_TAKEOVER_SECONDS + 1)
    restarted.observe("fraud-detector", "production", [row], complete=False, actor="argocd")
    tags = registry.tags[("Fraud Detector", "7")]
    assert (tags["promoter.production.status"], tags["promoter.production.health"]) == \
        ("deployed", "Healthy")
    assert len(_told(tmp_path)) == 1   # this one's: the killed telling told nothing

    # Told now: observing the same rows again writes nothing more.
    registry.tags.clear()
    restarted.observe("fraud-detector", "production", [row], complete=False, actor="argocd")
    assert registry.tags == {} and len(_told(tmp_path)) == 1


def test_replicas_observing_one_change_at_once_tell_it_once(
        state_backend: StateBackend, tmp_path: Path) -> None:
    row = _row("gpu-eu-1", "Healthy", "2026-01-01T10:05:00Z")
    other, _, other_registry = _feedback(state_backend, tmp_path)
    first, _, registry = _feedback(state_backend, tmp_path, _Interrupting(
        lambda: other.observe("fraud-detector", "production", [row], complete=False,
                              actor="argocd")))
    first.observe("fraud-detector", "production", [row], complete=False, actor="argocd")
    assert registry.tags[("Fraud Detector", "7")]["promoter.production.status"] == "deployed"
    assert other_registry.tags == {} and len(_told(tmp_path)) == 1
    other.observe("fraud-detector", "production", [row], complete=False, actor="argocd")
    assert other_registry.tags == {} and len(_told(tmp_path)) == 1


def test_a_change_observed_while_another_is_told_is_told_too(
        state_backend: StateBackend, tmp_path: Path) -> None:
    healthy = _row("gpu-eu-1", "Healthy", "2026-01-01T10:05:00Z")
    degraded = _row("gpu-eu-1", "Degraded", "2026-01-01T10:06:00Z")
    other, _, mlflow = _feedback(state_backend, tmp_path)
    first, _, first_registry = _feedback(state_backend, tmp_path, _Interrupting(
        lambda: other.observe("fraud-detector", "production", [degraded], complete=False,
                              actor="argocd")))
    first_registry.tags = mlflow.tags   # one MLflow behind both replicas
    first.observe("fraud-detector", "production", [healthy], complete=False, actor="argocd")
    # The older telling finished last and its tags won for a moment; the replica that told it
    # then finds the newer status stored and untold, and tells it: no further notification
    # is needed (Argo CD may never send one). Audited as MLflow was written.
    assert [entry["health"] for entry in _told(tmp_path)] == ["Degraded", "Healthy", "Degraded"]
    assert mlflow.tags[("Fraud Detector", "7")]["promoter.production.health"] == "Degraded"
    other.observe("fraud-detector", "production", [degraded], complete=False, actor="argocd")
    assert len(_told(tmp_path)) == 3   # nothing left to tell


def test_a_status_whose_telling_failed_part_way_is_told_whatever_comes_next(
        state_backend: StateBackend, tmp_path: Path) -> None:
    feedback, _, registry = _feedback(state_backend, tmp_path)
    feedback.observe("fraud-detector", "production",
                     [_row("gpu-eu-1", "Healthy", "2026-01-01T10:00:00Z")], complete=False,
                     actor="argocd")
    registry.down = True   # Degraded reaches neither MLflow nor the argocd.status entries
    with pytest.raises(TransientError):
        feedback.observe("fraud-detector", "production",
                         [_row("gpu-eu-1", "Degraded", "2026-01-01T10:01:00Z")],
                         complete=False, actor="argocd")
    registry.down = False
    # Back to the status told before: the telling of Degraded stopped part-way (what MLflow
    # holds is unknown), so tell it.
    feedback.observe("fraud-detector", "production",
                     [_row("gpu-eu-1", "Healthy", "2026-01-01T10:02:00Z")], complete=False,
                     actor="argocd")
    assert [entry["health"] for entry in _told(tmp_path)] == ["Healthy", "Healthy"]
    failed = [entry for entry in map(json.loads, (tmp_path / "audit.jsonl").read_text()
                                     .splitlines()) if entry["event"] == "write_back.failed"]
    assert len(failed) == 1
