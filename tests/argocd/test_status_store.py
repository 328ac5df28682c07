"""The last row per cluster in the state database, on SQLite and PostgreSQL: an Argo CD
observation never replaces a newer one (notifications arrive late or out of order)."""

from __future__ import annotations

from pathlib import Path

from promoter.core.cluster_status import ClusterStatus, from_application
from promoter.ports.pipeline import DeployedState
from promoter.service.audit import AuditTrail
from promoter.service.cluster_feedback import ClusterFeedback, StatusStore
from promoter.service.ledger import StateLedger
from tests.argocd.applications import application
from tests.argocd.test_argocd_hook import RecordingRegistry
from tests.fixtures.state_backends import StateBackend


def _row(cluster: str, health: str, at: str) -> ClusterStatus:
    row = from_application(application("fraud-detector", "production", cluster, health=health,
                                       reconciled_at=at))
    assert row is not None
    return row


def _feedback(backend: StateBackend, tmp_path: Path) -> tuple[ClusterFeedback, StatusStore,
                                                              RecordingRegistry]:
    db = backend.open()
    ledger = StateLedger(db)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    store, registry = StatusStore(db), RecordingRegistry()
    return ClusterFeedback(store, ledger, AuditTrail(tmp_path), registry), store, registry


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
