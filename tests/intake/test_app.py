"""The webhook service in-process (httpx ASGI transport) with a real SQLite job queue."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promoter.service.app import create_app
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.service.queue import JobQueue
from promoter.service.verify import sign_databricks, sign_mlflow
from tests.intake.conftest import (
    CAPTURE_SECRET,
    FixedClock,
    capture,
    databricks_body,
    make_settings,
)

ALIAS_SET = "model_version_alias.created.json"


def captured(name: str) -> tuple[dict[str, str], bytes, FixedClock]:
    delivery = capture(name)
    headers = dict(delivery["headers"])
    return headers, delivery["body"].encode(), FixedClock(int(headers["X-MLflow-Timestamp"]) + 2)


def signed(body: bytes, clock: FixedClock, secret: str = CAPTURE_SECRET,
           delivery_id: str | None = None) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(clock.value))
    return {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
            "X-MLflow-Timestamp": timestamp,
            "X-MLflow-Signature": sign_mlflow(secret, delivery_id, timestamp, body)}


def test_a_real_alias_delivery_becomes_one_durable_job(app_client_factory: Any) -> None:
    headers, body, clock = captured(ALIAS_SET)
    app = app_client_factory(clock=clock)
    first = app.post("/webhooks/mlflow", body, headers)
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "queued"
    [job] = app.queue.list()
    assert (job.key.model, job.key.version, job.key.env, job.key.action) == (
        "promo-demo", "2", "production", "promote")
    assert job.payload["delivery_id"] == headers["X-MLflow-Delivery-Id"]
    again = app.post("/webhooks/mlflow", body, headers)  # MLflow re-delivers
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    reset = app.post("/webhooks/mlflow", body, signed(body, clock))  # alias set again
    assert reset.json()["outcome"] == "covered"
    assert len(app.queue.list()) == 1


def test_rollback_after_moving_the_alias_makes_a_new_job(app_client_factory: Any) -> None:
    app = app_client_factory(clock=FixedClock(1795862970))
    clock = FixedClock(1795862970)
    def move(version: str) -> Any:
        body = json.dumps({"entity": "model_version_alias", "action": "created",
                           "data": {"name": "m", "alias": "staging", "version": version}}).encode()
        response = app.post("/webhooks/mlflow", body, signed(body, clock))
        assert response.status_code == 200
        return response.json()

    for version in ("2", "1", "2"):   # each move after the previous job finished
        assert move(version)["outcome"] == "queued"
        job = app.queue.claim("w")
        assert job is not None and job.key.version == version
        app.queue.complete(job.id, "w", {})
    assert [job.key.version for job in reversed(app.queue.list())] == ["2", "1", "2"]
    # While a job waits, a later move is covered by it: it deploys what the alias says then.
    assert move("1")["outcome"] == "queued"
    assert move("3")["outcome"] == "covered"
    assert app.queue.list()[0].key.version == "3" and len(app.queue.list()) == 4


def test_alias_deleted_enqueues_a_decommission(app_client_factory: Any) -> None:
    body = json.dumps({"entity": "model_version_alias", "action": "deleted",
                       "data": {"name": "promo-demo", "alias": "production"}}).encode()
    clock = FixedClock(1795862970)
    app = app_client_factory(clock=clock)
    response = app.post("/webhooks/mlflow", body, signed(body, clock))
    assert response.status_code == 200, response.text
    [job] = app.queue.list()
    assert (job.key.action, job.key.version, job.key.env) == ("decommission", "*", "production")


def test_ignored_events_are_acknowledged_without_a_job(app_client_factory: Any) -> None:
    headers, body, clock = captured("model_version.created.json")
    app = app_client_factory(clock=clock)
    response = app.post("/webhooks/mlflow", body, headers)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored" and response.json()["ignored"]
    assert app.queue.list() == []


def test_a_replayed_old_delivery_is_401(app_client_factory: Any) -> None:
    headers, body, clock = captured(ALIAS_SET)
    clock.value += 3600
    app = app_client_factory(clock=clock)
    response = app.post("/webhooks/mlflow", body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized" and "replay" in response.json()["detail"]
    assert app.queue.list() == []


def test_wrong_secret_is_401(app_client_factory: Any) -> None:
    headers, body, clock = captured(ALIAS_SET)
    app = app_client_factory(clock=clock, PROMOTER_MLFLOW_WEBHOOK_SECRET="not-the-secret")
    response = app.post("/webhooks/mlflow", body, headers)
    assert response.status_code == 401 and set(response.json()) == {"error", "detail"}
    assert "not-the-secret" not in response.text


@pytest.mark.parametrize(("path", "variable"), [
    ("/webhooks/mlflow", "PROMOTER_MLFLOW_WEBHOOK_SECRET"),
    ("/webhooks/databricks", "PROMOTER_DATABRICKS_WEBHOOK_SECRET")])
def test_a_server_without_the_secret_answers_503_not_configured(
        app_client_factory: Any, caplog: pytest.LogCaptureFixture, path: str,
        variable: str) -> None:
    # As the GitLab and Argo CD hooks do: the fault is the server's, the sender may retry.
    # A setup, not a failure: one WARNING, no ERROR per post (anyone may post to the URL,
    # and a 5xx logged as an ERROR looks like an outage), its own outcome in the metrics.
    headers, body, clock = captured(ALIAS_SET)
    if path.endswith("databricks"):
        body = databricks_body("transitioned_stage.production.json")
        headers = databricks_headers(body)
    app = app_client_factory(clock=clock, **{variable: ""})
    caplog.set_level(logging.INFO, logger="promoter")
    responses = [app.post(path, body, headers) for _ in range(3)]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After") == "5"
        assert response.json()["error"] == "not_configured"
        assert variable in response.json()["detail"]
    assert app.queue.list() == []
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == ["WARNING"]
    source = path.rsplit("/", 1)[-1]
    assert (f'promoter_webhook_deliveries_total{{outcome="not_configured",source="{source}"}} '
            "3.0") in app.get("/metrics").text


@pytest.mark.parametrize(("missing", "status"), [
    ("X-MLflow-Signature", 401), ("X-MLflow-Delivery-Id", 400), ("X-MLflow-Timestamp", 400)])
def test_missing_headers_are_refused(app_client_factory: Any, missing: str, status: int) -> None:
    headers, body, clock = captured(ALIAS_SET)
    del headers[missing]
    response = app_client_factory(clock=clock).post("/webhooks/mlflow", body, headers)
    assert response.status_code == status and response.json()["detail"]


def test_oversize_bodies_are_413_with_or_without_content_length(app_client_factory: Any) -> None:
    clock = FixedClock(1795862970)
    app = app_client_factory(clock=clock)
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert app.post("/webhooks/mlflow", big, signed(big, clock)).status_code == 413

    async def chunks() -> Any:  # no Content-Length: the limit applies while reading
        for _ in range(20):
            yield b"x" * 65536

    response = app.loop.run_until_complete(app.client.post(
        "/webhooks/mlflow", content=chunks(), headers=signed(b"", clock)))
    assert response.status_code == 413 and response.json()["error"] == "too_large"


def test_wrong_content_type_is_415(app_client_factory: Any) -> None:
    headers, body, clock = captured(ALIAS_SET)
    headers["Content-Type"] = "text/plain"
    response = app_client_factory(clock=clock).post("/webhooks/mlflow", body, headers)
    assert response.status_code == 415


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2", b"\xff\xfe", b"[" * 100_000, b"null",
                                  b'{"entity": 1, "action": "created", "data": {}}',
                                  b'{"entity": "model_version_alias", "action": "created"}'])
def test_malformed_signed_bodies_are_400(app_client_factory: Any, body: bytes) -> None:
    clock = FixedClock(1795862970)
    response = app_client_factory(clock=clock).post("/webhooks/mlflow", body,
                                                    signed(body, clock))
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "detail"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=12)
mlflow_like = st.fixed_dictionaries({
    "entity": st.sampled_from(["model_version_alias", "model_version", "x"]) | json_values,
    "action": st.sampled_from(["created", "deleted"]) | json_values,
    "data": st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=300) | json_values, "alias": st.sampled_from(
            ["staging", "production", ""]) | json_values,
        "version": st.from_regex(r"[0-9]{1,12}", fullmatch=True) | json_values}) | json_values,
}, optional={"timestamp": st.text(max_size=40) | json_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=mlflow_like.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=300),
       content_type=st.sampled_from(["application/json", "application/json; charset=utf-8"]))
def test_fuzzed_signed_bodies_never_get_a_5xx(app_client_factory: Any, body: bytes,
                                              content_type: str) -> None:
    if not hasattr(test_fuzzed_signed_bodies_never_get_a_5xx, "app"):
        clock = FixedClock(1795862970)
        test_fuzzed_signed_bodies_never_get_a_5xx.app = (app_client_factory(clock=clock), clock)  # type: ignore[attr-defined]
    app, clock = test_fuzzed_signed_bodies_never_get_a_5xx.app  # type: ignore[attr-defined]
    headers = {**signed(body, clock), "Content-Type": content_type}
    response = app.post("/webhooks/mlflow", body, headers)
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400), response.text
    data = response.json()
    assert ("outcome" in data) if response.status_code == 200 else set(data) == {"error", "detail"}


def databricks_headers(body: bytes, secret: str = "databricks-secret") -> dict[str, str]:
    return {"Content-Type": "application/json; charset=utf-8",
            "X-Databricks-Signature": sign_databricks(secret, body)}


# The captured deliveries' event_timestamp (Databricks' documented example), as a clock.
DATABRICKS_SENT = FixedClock(1589859029343 / 1000 + 2)


def test_databricks_transition_becomes_a_job_once(app_client_factory: Any) -> None:
    app = app_client_factory(clock=DATABRICKS_SENT)
    body = databricks_body("transitioned_stage.production.json")
    first = app.post("/webhooks/databricks", body, databricks_headers(body))
    assert first.status_code == 200, first.text
    again = app.post("/webhooks/databricks", body, databricks_headers(body))
    assert again.json()["outcome"] == "duplicate"
    [job] = app.queue.list()
    assert (job.key.model, job.key.version, job.key.env) == ("fraud-detector", "8", "production")


def test_databricks_wrong_signature_is_401(app_client_factory: Any) -> None:
    app = app_client_factory(clock=DATABRICKS_SENT)
    body = databricks_body("transitioned_stage.production.json")
    response = app.post("/webhooks/databricks", body, databricks_headers(body, "other"))
    assert response.status_code == 401 and app.queue.list() == []


def test_a_databricks_delivery_older_than_its_dedupe_memory_is_refused(
        app_client_factory: Any) -> None:
    """Databricks sends no timestamp header to bound a replay by: a signed body captured once
    would make its job again after its dedupe row is forgotten (14 days). So one whose
    event_timestamp is older than that memory, less a day's margin, is refused; the reconcile
    loop finds any promotion it missed."""
    body = databricks_body("transitioned_stage.production.json")
    thirteen_days = 13 * 24 * 3600
    app = app_client_factory(clock=FixedClock(DATABRICKS_SENT.value + thirteen_days - 60))
    assert app.post("/webhooks/databricks", body, databricks_headers(body)).status_code == 200
    late = app_client_factory(clock=FixedClock(DATABRICKS_SENT.value + thirteen_days + 60))
    response = late.post("/webhooks/databricks", body, databricks_headers(body))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert "13 days" in response.json()["detail"] and "replay" in response.json()["detail"]
    assert late.queue.list() == []
    # A delivery without event_timestamp has nothing to bound it by either: refused too.
    bare = json.dumps({k: v for k, v in json.loads(body).items()
                       if k != "event_timestamp"}).encode()
    response = late.post("/webhooks/databricks", bare, databricks_headers(bare))
    assert response.status_code == 400 and "event_timestamp" in response.json()["detail"]
    assert late.queue.list() == []


def test_unknown_routes_and_methods_answer_json(app_client_factory: Any) -> None:
    app = app_client_factory()
    assert app.get("/nope").json()["error"] == "not_found"
    response = app.get("/webhooks/mlflow")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_a_broken_queue_is_the_only_5xx(app_client_factory: Any) -> None:
    headers, body, clock = captured(ALIAS_SET)
    app = app_client_factory(clock=clock)
    assert app.post("/webhooks/mlflow", body, headers).status_code == 200
    database = app.queue.db_path
    app.queue.close()  # the writer and every connection let go of the file ...
    for suffix in ("", "-wal", "-shm"):
        path = database.with_name(database.name + suffix)
        path.unlink(missing_ok=True)
    database.mkdir()  # ... and a directory now sits where the database was
    try:
        response = app.post("/webhooks/mlflow", body, signed(body, clock))
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert response.json()["error"] == "unavailable"
        assert app.get("/readyz").status_code == 503
    finally:
        shutil.rmtree(database)


def test_metrics_count_deliveries_by_source_and_outcome(app_client_factory: Any) -> None:
    headers, body, clock = captured(ALIAS_SET)
    app = app_client_factory(clock=clock)
    app.post("/webhooks/mlflow", body, headers)
    app.post("/webhooks/mlflow", body, headers)
    app.post("/webhooks/mlflow", body, {**headers, "X-MLflow-Signature": "v1,AAAA"})
    text = app.get("/metrics").text
    assert 'promoter_webhook_deliveries_total{outcome="queued",source="mlflow"} 1.0' in text
    assert 'promoter_webhook_deliveries_total{outcome="duplicate",source="mlflow"} 1.0' in text
    assert 'promoter_webhook_deliveries_total{outcome="unauthorized",source="mlflow"} 1.0' in text
    assert 'promoter_jobs{state="queued"} 1.0' in text
    assert "promoter_queue_depth 1.0" in text
    assert "promoter_job_step_duration_seconds" in text


def test_readyz_reports_an_unreachable_mlflow_and_stays_ready(app_client_factory: Any,
                                                              tmp_path: Any) -> None:
    """Deliveries are still stored (jobs wait out MLflow with backoff): the pod stays in the
    Service, and the answer says what is down."""
    from promoter.service import composition
    from tests.fixtures.mlflow_server import free_port

    # Built as `promoter serve` builds it: the composition root's MLflow client settings make
    # an unreachable server fail within /readyz's timeout.
    registry = composition.registry(make_settings(
        tmp_path, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}"))
    response = app_client_factory(registry=registry).get("/readyz")
    assert response.status_code == 200 and response.json()["status"] == "ready"
    assert response.json()["checks"]["queue"] == "ok"
    assert "unreachable" in response.json()["checks"]["mlflow"] or \
        "failed" in response.json()["checks"]["mlflow"]
    assert app_client_factory().get("/healthz").json() == {"status": "ok"}


def test_healthz_fails_while_the_process_needs_a_restart(app_client_factory: Any) -> None:
    """Liveness is how Kubernetes restarts a replica whose job workers are all held by calls
    that timed out and never returned (worker.stuck_workers)."""
    reason: list[str] = []
    client = app_client_factory(restart_reason=lambda: reason[0] if reason else None)
    assert client.get("/healthz").status_code == 200
    reason.append("all 1 job workers are held by attempts that timed out")
    stuck = client.get("/healthz")
    assert stuck.status_code == 503
    assert stuck.json() == {"status": "stuck", "detail": reason[0]}


def test_readyz_gives_up_on_a_hanging_mlflow_and_stays_ready(app_client_factory: Any,
                                                             tmp_path: Any) -> None:
    """An MLflow that accepts and never answers holds the real client for its 10 s timeout,
    beyond the kubelet's 5 s probe timeout: /readyz reports it after its own shorter wait."""
    from promoter.service import composition
    from promoter.service.app import MLFLOW_REPORT_TIMEOUT_SECONDS
    from tests.fixtures.mlflow_server import silent_server

    with silent_server() as url:
        registry = composition.registry(make_settings(tmp_path, MLFLOW_TRACKING_URI=url))
        response = app_client_factory(registry=registry).get("/readyz")
    assert response.status_code == 200 and response.json()["status"] == "ready"
    assert response.json()["checks"]["mlflow"] == \
        f"no answer within {MLFLOW_REPORT_TIMEOUT_SECONDS:.0f} s"


def test_one_delivery_fanning_out_to_two_envs_is_deduplicated_per_env(
        app_client_factory: Any, tmp_path: Any) -> None:
    config = tmp_path / "promoter.yaml"
    config.write_text(
        "environments:\n"
        "  prod-eu: {trigger: {alias: production}, namespace: models-eu}\n"
        "  prod-us: {trigger: {alias: production}, namespace: models-us}\n")
    headers, body, clock = captured(ALIAS_SET)
    app = app_client_factory(clock=clock, PROMOTER_CONFIG=str(config))
    first = app.post("/webhooks/mlflow", body, headers).json()
    assert [(j["env"], j["created"]) for j in first["jobs"]] == [
        ("prod-eu", True), ("prod-us", True)]
    again = app.post("/webhooks/mlflow", body, headers).json()
    assert again["outcome"] == "duplicate" and len(app.queue.list()) == 2


@pytest.mark.parametrize(("path", "variable"), [
    ("/webhooks/gitlab", "PROMOTER_GITLAB_WEBHOOK_TOKEN"),
    ("/webhooks/argocd", "PROMOTER_ARGOCD_WEBHOOK_SECRET")])
def test_a_hook_without_its_token_warns_once_as_the_registry_intake_does(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, variable: str) -> None:
    """The GitLab and Argo CD hooks' 503 not_configured (with Retry-After) was not logged at
    all: now one WARNING for many posts, as for MLflow and Databricks."""
    settings = make_settings(tmp_path / "state")
    queue = JobQueue.open(settings.state_dir)
    hook = GitLabHookHandler(None, DeliveryLog(settings.state_dir), lambda project, iid: None,
                             lambda event: None)
    app = create_app(settings, queue, gitlab_hook=hook)
    caplog.set_level(logging.INFO, logger="promoter")

    async def post_three() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://promoter.test") as client:
            return [await client.post(path, content=b"{}", headers={
                "Content-Type": "application/json"}) for _ in range(3)]

    try:
        responses = asyncio.run(post_three())
    finally:
        queue.close()
    for response in responses:
        assert (response.status_code, response.headers.get("Retry-After")) == (503, "5")
        assert response.json()["error"] == "not_configured"
        assert variable in response.json()["detail"]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in warned] == ["WARNING"], [r.getMessage() for r in warned]
