"""Hostile but authentic webhook bodies (valid signature or token) answer 400 JSON, never 500.

Every source goes through the same parser (promoter.core.events.load_json): a lone surrogate
(``"\\ud800"`` is valid JSON, but the text it decodes to cannot be stored as UTF-8), nesting
100,000 levels deep, and integers no database column holds (10**30, 2**64) are refused at
parsing, before anything is stored. The app is the real one, on the real SQLite queue and the
real GitLab push ledger, driven over ASGI.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from promoter.core import events
from promoter.core.mr_events import ForgeEvent
from promoter.errors import UserError
from promoter.service import composition
from promoter.service.app import create_app
from promoter.service.queue import JobQueue
from promoter.service.verify import sign_databricks, sign_mlflow
from tests.intake.conftest import FixedClock, make_settings

MLFLOW_SECRET, DATABRICKS_SECRET, GITLAB_TOKEN = "mlflow-s3cret", "databricks-s3cret", "gl-tok"
NOW = 1795862970


@dataclass
class Hostile:
    client: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    queue: JobQueue
    events: list[ForgeEvent]
    app: Any

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, content=body,
                                                             headers=headers))

    def mlflow(self, body: bytes) -> httpx.Response:
        delivery, stamp = str(uuid.uuid4()), str(NOW)
        return self.post("/webhooks/mlflow", body, {
            "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": sign_mlflow(MLFLOW_SECRET, delivery, stamp, body)})

    def databricks(self, body: bytes) -> httpx.Response:
        return self.post("/webhooks/databricks", body, {
            "Content-Type": "application/json",
            "X-Databricks-Signature": sign_databricks(DATABRICKS_SECRET, body)})

    def gitlab(self, body: bytes, event: str = "Merge Request Hook") -> httpx.Response:
        return self.post("/webhooks/gitlab", body, {
            "Content-Type": "application/json", "X-Gitlab-Token": GITLAB_TOKEN,
            "X-Gitlab-Event": event})


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Hostile]:
    settings = make_settings(tmp_path / "state", PROMOTER_MLFLOW_WEBHOOK_SECRET=MLFLOW_SECRET,
                             PROMOTER_DATABRICKS_WEBHOOK_SECRET=DATABRICKS_SECRET,
                             PROMOTER_GITLAB_WEBHOOK_TOKEN=GITLAB_TOKEN)
    queue = JobQueue.open(settings.state_dir)
    seen: list[ForgeEvent] = []
    hook = composition.gitlab_hook(settings, seen.append)
    app = create_app(settings, queue, clock=FixedClock(NOW), gitlab_hook=hook)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                               base_url="http://promoter.test")
    yield Hostile(client, loop, queue, seen, app)
    loop.run_until_complete(client.aclose())
    queue.close()
    loop.close()


def mlflow_body(name: str = "fraud", alias: str = "production", version: Any = "3") -> bytes:
    return json.dumps({"entity": "model_version_alias", "action": "created",
                       "timestamp": "2026-11-28T10:49:54+00:00",
                       "data": {"name": name, "alias": alias, "version": version}}).encode()


def databricks_json(**changes: Any) -> bytes:
    return json.dumps({"event": "MODEL_VERSION_TRANSITIONED_STAGE", "event_timestamp": 1,
                       "model_name": "fraud", "version": "8", "to_stage": "Production",
                       "from_stage": "None", **changes}).encode()


def mr_hook(iid: Any = 1, project_id: Any = 7, title: str = "Promote fraud",
            source: str = "promote/fraud/production") -> bytes:
    return json.dumps({
        "object_kind": "merge_request", "user": {"username": "alice"},
        "project": {"id": project_id, "path_with_namespace": "group/gitops"},
        "object_attributes": {"iid": iid, "action": "approved", "state": "opened",
                              "source_branch": source, "target_branch": "main",
                              "title": title, "url": "https://gitlab.example/mr/1",
                              "last_commit": {"id": "a" * 40}}}).encode()


def pipeline_hook(pipeline_id: Any = 5, iid: Any = 1) -> bytes:
    return json.dumps({
        "object_kind": "pipeline", "project": {"id": 7, "path_with_namespace": "group/gitops"},
        "object_attributes": {"id": pipeline_id, "ref": "promote/fraud/production",
                              "sha": "a" * 40, "status": "success"},
        "merge_request": {"iid": iid, "source_branch": "promote/fraud/production"}}).encode()


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def assert_json_400(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    answer = response.json()
    assert set(answer) == {"error", "detail"}
    for word in words:
        assert word in answer["detail"], answer


LONE_SURROGATE = '"\\ud800"'  # six ASCII characters of JSON: valid JSON, not valid text


@pytest.mark.parametrize("where", ["name", "alias"])
def test_mlflow_lone_surrogate_is_400(hostile: Hostile, where: str) -> None:
    body = mlflow_body(**{where: "PLACEHOLDER"}).replace(b'"PLACEHOLDER"',
                                                         LONE_SURROGATE.encode())
    assert_json_400(hostile.mlflow(body), "surrogate")
    assert sum(hostile.queue.counts_by_state().values()) == 0


def test_databricks_lone_surrogate_is_400(hostile: Hostile) -> None:
    body = databricks_json(model_name="PLACEHOLDER").replace(b'"PLACEHOLDER"',
                                                             LONE_SURROGATE.encode())
    assert_json_400(hostile.databricks(body), "surrogate")
    # a surrogate in a key, or in a field nobody reads, is refused just the same
    body = databricks_json(text="x").replace(b'"text"', LONE_SURROGATE.encode())
    assert_json_400(hostile.databricks(body), "surrogate")


def test_gitlab_lone_surrogate_is_400(hostile: Hostile) -> None:
    body = mr_hook(title="PLACEHOLDER").replace(b'"PLACEHOLDER"', LONE_SURROGATE.encode())
    assert_json_400(hostile.gitlab(body), "surrogate")
    assert hostile.events == []


def test_every_source_refuses_absurd_nesting(hostile: Hostile) -> None:
    body = deep(100_000)
    assert_json_400(hostile.mlflow(body), "deeper")
    assert_json_400(hostile.databricks(body), "deeper")
    assert_json_400(hostile.gitlab(body), "deeper")
    # below the interpreter's recursion limit, but deeper than any real payload
    nested = b'{"object_kind": "merge_request", "x": ' + deep(200) + b"}"
    assert_json_400(hostile.gitlab(nested), "deeper")


@pytest.mark.parametrize("huge", [10**30, 2**64, -(2**63) - 1])
def test_gitlab_integers_out_of_range_are_400(hostile: Hostile, huge: int) -> None:
    assert_json_400(hostile.gitlab(mr_hook(iid=huge)), "64 bits")
    assert_json_400(hostile.gitlab(mr_hook(project_id=huge)), "64 bits")
    assert_json_400(hostile.gitlab(pipeline_hook(pipeline_id=huge)), "64 bits")
    assert_json_400(hostile.gitlab(pipeline_hook(iid=huge), "Pipeline Hook"), "64 bits")
    assert hostile.events == []


def test_registry_integers_out_of_range_are_400(hostile: Hostile) -> None:
    assert_json_400(hostile.mlflow(mlflow_body(version=10**30)), "64 bits")
    assert_json_400(hostile.databricks(databricks_json(event_timestamp=2**64)), "64 bits")


def test_the_largest_64_bit_integers_still_parse(hostile: Hostile) -> None:
    """The bound is the 64-bit range, not a guess: the edge values pass parsing."""
    response = hostile.gitlab(mr_hook(iid=2**63 - 1, project_id=2**63 - 1))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"  # promoter pushed no commit for this MR


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"a": NaN}', b'{"a": 1e999}',
                                  '{"a": "é"}'.encode("utf-16")])
def test_load_json_refuses_what_is_not_plain_utf8_json(body: bytes) -> None:
    with pytest.raises(UserError):
        events.load_json(body)


def test_load_json_keeps_ordinary_payloads() -> None:
    assert events.load_json(mlflow_body())["data"]["name"] == "fraud"
    assert events.load_json('{"name": "modèle 🚀"}'.encode())["name"] == "modèle 🚀"
    assert events.load_json(deep(events.MAX_JSON_DEPTH)) is not None


def test_a_gitlab_body_cut_off_midway_is_no_error(hostile: Hostile,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The request deadline of `promoter serve` closes stalled bodies; the GitLab endpoint
    sees the disconnect. That is a 4xx outcome logged as a warning, not an unexpected error."""
    messages = [{"type": "http.request", "body": b'{"object_kind":', "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/webhooks/gitlab",
             "raw_path": b"/webhooks/gitlab", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"),
                         (b"x-gitlab-token", GITLAB_TOKEN.encode()),
                         (b"x-gitlab-event", b"Merge Request Hook")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    hostile.loop.run_until_complete(hostile.app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= 40], caplog.text
    assert hostile.events == []
