"""POST /webhooks/argocd through the serve app: how a failure is answered over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promoter.ports.pipeline import DeployedState
from promoter.service import composition
from promoter.service.app import create_app
from promoter.service.audit import AuditTrail
from promoter.service.cluster_feedback import ClusterFeedback
from promoter.service.cluster_status_store import StatusStore
from promoter.service.hook_http import recorded
from promoter.service.ledger import StateLedger
from promoter.service.queue import JobQueue
from promoter.settings import load_settings
from tests.argocd.applications import application, notification
from tests.argocd.test_argocd_hook import FailingStatusStore, Notes, RecordingRegistry
from tests.fixtures.failing_state import post_then_probe, posts_then_probes

SECRET = "s3cret-token"
HEADERS = {"X-Promoter-Token": SECRET, "Content-Type": "application/json"}


class BrokenFeedback:
    """Cluster feedback with a bug: telling the cluster's row raises what no one expects."""

    def __init__(self, store: StatusStore) -> None:
        self.store = store

    def observe(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug while telling")


def test_a_bug_while_handling_a_notification_is_500_with_retry_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argo CD retries a 5xx: this one, answered by the app-wide handler, said not when."""
    monkeypatch.setattr(composition, "cluster_feedback",
                        lambda settings, registry: BrokenFeedback(StatusStore(tmp_path)))
    settings = load_settings(environ={"PROMOTER_STATE_DIR": str(tmp_path / "serve"),
                                      "PROMOTER_ARGOCD_WEBHOOK_SECRET": SECRET})
    queue = JobQueue.open(settings.state_dir)
    body = notification("sync-succeeded", application("fraud-detector", "production", "c1"))
    try:
        answer, _ = post_then_probe(create_app(settings, queue), "/webhooks/argocd", body, HEADERS)
    finally:
        queue.close()
    assert (answer.status_code, answer.headers.get("Retry-After")) == (500, "5"), answer.text
    assert answer.json() == {"error": "internal", "detail": "unexpected error; see the logs"}


def test_a_notification_recorded_after_a_state_failure_makes_the_replica_ready_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed claim marks the replica not ready for a while; a later notification recorded
    in the state database proves it stores again, as a delivery the queue stores does."""
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState(model="Fraud Detector", env="production", name="fraud-detector",
                             version="7", status="merged", mr_iid=3, head_sha="a" * 40))
    store = FailingStatusStore(tmp_path, "claim")
    feedback = ClusterFeedback(store, ledger, AuditTrail(tmp_path), RecordingRegistry(), Notes())
    monkeypatch.setattr(composition, "cluster_feedback", lambda settings, registry: feedback)
    settings = load_settings(environ={"PROMOTER_STATE_DIR": str(tmp_path / "serve"),
                                      "PROMOTER_ARGOCD_WEBHOOK_SECRET": SECRET})
    queue = JobQueue.open(settings.state_dir)
    app = create_app(settings, queue)

    def failing(write: str) -> Callable[[], None]:
        return lambda: setattr(store, "failing", write)

    try:
        failed, not_ready, recorded, ready = posts_then_probes(app, "/webhooks/argocd", [
            (failing(write), notification("sync-succeeded", application(
                "fraud-detector", "production", cluster)), HEADERS)
            for cluster, write in (("c1", "claim"), ("c2", ""))])
    finally:
        queue.close()
    assert (failed.status_code, not_ready.status_code) == (503, 503), not_ready.text
    assert recorded.status_code == 200 and recorded.json()["status"] == "recorded"
    assert ready.status_code == 200, ready.text


def test_only_a_delivery_whose_answer_was_written_counts_as_recorded() -> None:
    """Answers before the claim (ignored), from the claim alone (duplicate) and 4xx/5xx prove
    no write of the state database."""
    assert recorded(200, {"status": "recorded"}) and recorded(200, {"status": "accepted"})
    assert recorded(200, {"status": "human_commit"})
    for status, answer in ((200, {"status": "ignored"}), (200, {"status": "duplicate"}),
                           (503, {"error": "in_progress"}), (401, {"error": "unauthorized"})):
        assert not recorded(status, answer), answer


@pytest.mark.parametrize("server_secret", ["", SECRET])
@pytest.mark.parametrize("sent", [{}, {"X-Promoter-Token": "wrong"}])
def test_the_token_is_checked_before_the_handler_is_built(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, server_secret: str,
        sent: dict[str, str]) -> None:
    """The GitLab provider configured without PROMOTER_GITLAB_TOKEN: building the handler
    fails. A notification without the right token must not get that far: it was answered 500
    "internal" with an ERROR traceback, even with no Argo CD secret set (503 not_configured)."""
    settings = load_settings(environ={
        "PROMOTER_STATE_DIR": str(tmp_path / "serve"), "PROMOTER_GITLAB_URL":
        "https://gitlab.invalid", "PROMOTER_GITLAB_PROJECT": "group/project",
        "PROMOTER_ARGOCD_WEBHOOK_SECRET": server_secret})
    queue = JobQueue.open(settings.state_dir)
    body = notification("sync-succeeded", application("fraud-detector", "production", "c1"))
    try:
        answer, _ = post_then_probe(create_app(settings, queue), "/webhooks/argocd", body,
                                    {"Content-Type": "application/json", **sent})
    finally:
        queue.close()
    expected = (401, "unauthorized") if server_secret else (503, "not_configured")
    assert (answer.status_code, answer.json()["error"]) == expected, answer.text
    assert not [r for r in caplog.records if "Traceback" in r.getMessage() or r.exc_info]
