"""Hook handlers stuck on a slow GitLab or MLflow keep their threads to themselves: /readyz and
/metrics still answer, so the replica stays in the Service and MLflow's deliveries reach it."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path

import httpx

from promoter.secret_settings import Secret
from promoter.service.app import create_app
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.service.queue import JobQueue
from promoter.service.thread_lanes import HOOK_THREADS
from tests.intake.conftest import make_settings

TOKEN = "gitlab-hook-token"
DELIVERIES = 60  # more than anyio's shared pool (40 threads) and the hooks' lane together
WAIT_STEPS = 3000  # x 10 ms: how long the test waits for the handlers to start, at most


class SlowForge:
    """pushed_head that blocks, as a GitLab read does while GitLab hangs, until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def pushed_head(self, project: int, iid: int) -> tuple[str, str] | None:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.release.wait(60)  # bounded: a broken test must not hang the run
        finally:
            with self._lock:
                self.running -= 1
        return None


def merge_request(iid: int) -> bytes:
    return json.dumps({
        "object_kind": "merge_request", "project": {"id": 1, "path_with_namespace": "g/p"},
        "object_attributes": {"action": "approved", "iid": iid, "state": "opened",
                              "source_branch": "promote/fraud/production",
                              "target_branch": "main", "last_commit": {"id": "a" * 40}},
        "user": {"username": "reviewer"}}).encode()


def test_slow_hook_deliveries_leave_readyz_and_metrics_answering(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", PROMOTER_GITLAB_WEBHOOK_TOKEN=TOKEN)
    queue = JobQueue.open(settings.state_dir)
    forge = SlowForge()
    hook = GitLabHookHandler(Secret(TOKEN), DeliveryLog(settings.state_dir), forge.pushed_head,
                             lambda event: None)
    app = create_app(settings, queue, None, gitlab_hook=hook)

    async def deliver_then_probe() -> tuple[httpx.Response, httpx.Response,
                                            list[httpx.Response]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://promoter.test", timeout=120) as client:
            hooks = [asyncio.create_task(client.post(
                "/webhooks/gitlab", content=merge_request(iid), headers={
                    "X-Gitlab-Token": TOKEN, "X-Gitlab-Event": "Merge Request Hook",
                    "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}))
                for iid in range(1, DELIVERIES + 1)]
            try:
                for _ in range(WAIT_STEPS):  # until every hook thread is held
                    if forge.running >= HOOK_THREADS:
                        break
                    await asyncio.sleep(0.01)
                ready = await client.get("/readyz")
                scraped = await client.get("/metrics")
            finally:
                forge.release.set()
            return ready, scraped, await asyncio.gather(*hooks)

    try:
        ready, scraped, answers = asyncio.run(deliver_then_probe())
    finally:
        forge.release.set()
        queue.close()
    assert forge.most_at_once >= HOOK_THREADS, "the deliveries never held the hook threads"
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["queue"] == "ok"
    assert ready.json()["checks"]["state_writes"] == "ok"
    assert scraped.status_code == 200 and b"promoter_jobs" in scraped.content
    # Deliveries beyond the hooks' threads waited for one; none was refused or lost.
    assert forge.most_at_once == HOOK_THREADS
    assert [answer.status_code for answer in answers] == [200] * DELIVERIES, \
        [answer.text for answer in answers if answer.status_code != 200][:3]
