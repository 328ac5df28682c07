"""A GitLab hook delivery is never lost: not to a replica killed mid-handling, nor to a first
attempt slower than GitLab's timeout. Real handler, real state database (both backends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from promoter.core.mr_events import ForgeEvent
from promoter.secret_settings import Secret
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.state.deliveries import PROCESSING_TAKEOVER_SECONDS
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import REPO_ROOT

TOKEN = "hook-s3cret"
BRANCH = "promote/fraud-detector/production"
HEAD = "a" * 40
BODY = json.dumps({
    "object_kind": "merge_request", "user": {"username": "alice"},
    "project": {"id": 7, "path_with_namespace": "group/gitops"},
    "object_attributes": {
        "iid": 1, "action": "merge", "state": "merged", "source_branch": BRANCH,
        "target_branch": "main", "title": "Promote fraud-detector", "url": "https://g/mr/1",
        "last_commit": {"id": HEAD}}}).encode()
HEADERS = {"X-Gitlab-Token": TOKEN, "X-Gitlab-Event": "Merge Request Hook",
           "Idempotency-Key": "delivery-1"}

# A replica that is SIGKILLed (OOM, node loss) after claiming the delivery, before answering.
KILLED_REPLICA = """
import json, os, signal, sys
from pathlib import Path
from promoter.secret_settings import Secret
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
state_dir, url, body, headers, token, head = sys.argv[1:7]
if url:
    from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
    state = PostgresStateDB.connect(StateUrl(url), state_dir=Path(state_dir))
else:
    state = Path(state_dir)
def die(event):
    os.kill(os.getpid(), signal.SIGKILL)
GitLabHookHandler(Secret(token), DeliveryLog(state), lambda project, iid: json.loads(head),
                  die).handle(json.loads(headers), body.encode())
"""


class Later:
    """The clock of a re-delivery that comes ``seconds`` after the first."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self) -> float:
        return time.time() + self.seconds


def handler(backend: StateBackend, acted: list[ForgeEvent],
            on_event: Callable[[ForgeEvent], None] | None = None,
            **options: Any) -> GitLabHookHandler:
    return GitLabHookHandler(Secret(TOKEN), DeliveryLog(backend.open(), **options),
                             lambda project, iid: (BRANCH, HEAD), on_event or acted.append)


def test_a_redelivery_after_the_first_handler_was_killed_is_acted_on(
        state_backend: StateBackend) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_REPLICA, str(state_backend.state_dir),
         state_backend.url or "", BODY.decode(), json.dumps(HEADERS), TOKEN,
         json.dumps([BRANCH, HEAD])],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert killed.returncode == -9, killed.stderr
    acted: list[ForgeEvent] = []

    # GitLab's retry soon after: not "duplicate" (nothing acted), a 5xx GitLab retries later.
    status, answer = handler(state_backend, acted).handle(HEADERS, BODY)
    assert (status, answer["error"]) == (503, "in_progress") and acted == []

    # A retry once the claim is older than any live handler takes it over and acts.
    later = Later(PROCESSING_TAKEOVER_SECONDS + 1)
    status, answer = handler(state_backend, acted, clock=later).handle(HEADERS, BODY)
    assert (status, answer["status"]) == (200, "accepted")
    assert [getattr(event, "action", None) for event in acted] == ["merge"]

    # Answered now: every later re-delivery is a duplicate.
    status, answer = handler(state_backend, acted, clock=Later(3600)).handle(HEADERS, BODY)
    assert (status, answer["status"]) == (200, "duplicate") and len(acted) == 1


def test_a_redelivery_while_the_first_is_still_handled_is_asked_to_retry(
        state_backend: StateBackend) -> None:
    """GitLab times out a slow first attempt and re-sends while it still runs: the re-delivery
    must neither act twice nor be told "duplicate" (the first attempt may yet fail)."""
    acted: list[ForgeEvent] = []
    retried: list[tuple[int, dict[str, Any]]] = []
    again = handler(state_backend, acted)

    def on_event(event: ForgeEvent) -> None:
        retried.append(again.handle(HEADERS, BODY))  # GitLab's retry arrives meanwhile
        acted.append(event)

    slow = handler(state_backend, acted, on_event)
    assert slow.handle(HEADERS, BODY)[1]["status"] == "accepted"
    assert [(status, answer.get("error")) for status, answer in retried] == \
        [(503, "in_progress")]
    assert len(acted) == 1
    assert again.handle(HEADERS, BODY)[1]["status"] == "duplicate"
