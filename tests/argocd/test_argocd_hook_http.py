"""POST /webhooks/argocd through the serve app: how a failure is answered over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promoter.service import composition
from promoter.service.app import create_app
from promoter.service.cluster_status_store import StatusStore
from promoter.service.queue import JobQueue
from promoter.settings import load_settings
from tests.argocd.applications import application, notification
from tests.fixtures.failing_state import post_then_probe

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
