"""`promoter serve` as a real process receiving real MLflow webhooks; the CLI around it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from promoter.service.verify import sign_mlflow
from tests.fixtures.mlflow_server import MlflowServer, free_port, tail, wait_for_http
from tests.fixtures.stack import DEPLOY_TAGS
from tests.intake.models import create_version

pytestmark = pytest.mark.e2e
SECRET = "e2e-webhook-secret-5b1f"
MODEL = "fraud-detector"


@dataclass
class Service:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "promoter", *args, "--output", "json"],
                              env=self.env, capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    def jobs(self) -> list[dict[str, Any]]:
        return [job for job in self.cli("jobs", "list") if job["model"] == MODEL]

    def metric(self, line_start: str) -> float:
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def service(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("serve")
    config = root / "promoter.yaml"
    config.write_text("server:\n  reconcile_interval_seconds: 0\n")  # tests run passes by hand
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PROMOTER_"))}
    env.update(PROMOTER_STATE_DIR=str(root / "state"), PROMOTER_CONFIG=str(config),
               MLFLOW_TRACKING_URI=mlflow_server.url, PROMOTER_MLFLOW_WEBHOOK_SECRET=SECRET)
    port = free_port()
    log = root / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "promoter", "serve", "--host", "127.0.0.1", "--port",
             str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", 60, process, log)
        yield Service(url, env, process, log)
    finally:
        # A webhook left pointing at this dead server would make MLflow's delivery threads
        # retry it for every later test's event, delaying their deliveries.
        with contextlib.suppress(Exception):
            client = mlflow_server.client()
            for hook in client.list_webhooks():
                if hook.url.startswith(url):
                    client.delete_webhook(hook.webhook_id)
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_hooks_register_is_idempotent(service: Service) -> None:
    url = f"{service.url}/webhooks/mlflow"
    first = service.cli("hooks", "register", "--url", url, "--name", "promoter-e2e")
    second = service.cli("hooks", "register", "--url", url, "--name", "promoter-e2e")
    assert first["created"] is True and second["created"] is False
    assert first["id"] == second["id"]
    hooks = [h for h in service.cli("hooks", "list") if h["name"] == "promoter-e2e"]
    assert len(hooks) == 1 and hooks[0]["url"] == url
    assert "model_version_alias.created" in hooks[0]["events"]


def test_alias_changes_in_mlflow_become_jobs(service: Service,
                                             mlflow_server: MlflowServer) -> None:
    client = mlflow_server.client()
    v1 = create_version(client, MODEL, tags=DEPLOY_TAGS)  # a complete deployment intent
    create_version(client, MODEL, tags=DEPLOY_TAGS)
    time.sleep(1.5)  # the server caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL=1 s
    client.set_registered_model_alias(MODEL, "production", v1)
    [job] = wait_until(service.jobs, "the promote job")
    assert (job["version"], job["env"], job["action"]) == (v1, "production", "promote")
    assert job["payload"]["source"] == "mlflow" and job["payload"]["delivery_id"]

    client.set_registered_model_alias(MODEL, "production", v1)  # set again: same job covers it
    wait_until(lambda: service.metric(
        'promoter_webhook_deliveries_total{outcome="covered",source="mlflow"}') >= 1,
        "the second delivery")
    assert len(service.jobs()) == 1

    # The worker ran the pipeline: it resolved the alias in MLflow, opened a merge request
    # (local provider) and wrote the status back.
    done = wait_until(lambda: [j for j in service.jobs() if j["state"] in ("done", "dead")],
                      "job done")
    assert done[0]["state"] == "done", done[0]["reason"]
    assert done[0]["result"]["version"] == v1 and done[0]["result"]["mr_iid"]
    assert client.get_model_version(MODEL, v1).tags["promoter.production.status"] == "mr_opened"

    client.delete_registered_model_alias(MODEL, "production")
    jobs = wait_until(lambda: [j for j in service.jobs() if j["action"] == "decommission"],
                      "the decommission job")
    assert [(j["version"], j["env"]) for j in jobs] == [("*", "production")]


def test_a_redelivered_delivery_makes_no_second_job(service: Service) -> None:
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "timestamp": "2026-11-28T10:49:29.980965+00:00",
                       "data": {"name": MODEL, "alias": "staging", "version": "2"}}).encode()
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": timestamp,
               "X-MLflow-Signature": sign_mlflow(SECRET, delivery_id, timestamp, body)}
    before = len(service.jobs())
    outcomes = [httpx.post(f"{service.url}/webhooks/mlflow", content=body, headers=headers,
                           timeout=10).json()["outcome"] for _ in range(3)]
    assert outcomes == ["queued", "duplicate", "duplicate"]
    assert len(service.jobs()) == before + 1


def test_reconcile_once_finds_a_legacy_stage_transition(service: Service,
                                                        mlflow_server: MlflowServer) -> None:
    client = mlflow_server.client()
    version = create_version(client, "legacy-stage-model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage("legacy-stage-model", version, "Staging")
    report = service.cli("reconcile", "--once")
    mine = [j for j in report["jobs"] if j["model"] == "legacy-stage-model"]
    assert [(j["version"], j["env"], j["action"], j["created"]) for j in mine] == [
        (version, "staging", "promote", True)]
    again = service.cli("reconcile", "--once")
    assert not [j for j in again["jobs"] if j["model"] == "legacy-stage-model"]


def test_readyz_and_metrics(service: Service) -> None:
    ready = httpx.get(f"{service.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "queue": "ok", "state_writes": "ok", "mlflow": "ok"}
    assert service.metric('promoter_jobs{state="done"}') >= 1
    assert service.metric("promoter_job_step_duration_seconds_count") >= 1


def test_sigterm_stops_gracefully_and_logs_are_json_without_the_secret(service: Service) -> None:
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=60) == 0, tail(service.log)
    lines = [line for line in service.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any(r["msg"] == "delivery accepted" for r in records)
    assert records[-1]["msg"] == "promoter serve stopped"
    assert SECRET not in service.log.read_text()


def test_hooks_register_refuses_to_leave_a_second_webhook_active(
        mlflow_server: MlflowServer) -> None:
    """`a` sends to 9001, `b` to 9002; registering `a` at 9002 updated `b` (the URL match)
    into a second `a` and left the first one sending every event to 9001 as well."""
    from promoter.adapters.mlflow.client import Connection
    from promoter.adapters.mlflow.webhooks import Webhooks
    from promoter.errors import PermanentError, UserError

    hooks = Webhooks(Connection(mlflow_server.url))
    events = ["model_version_alias.created"]
    first = [f"http://127.0.0.1:{port}/webhooks/mlflow" for port in (9001, 9002)]
    try:
        a, _ = hooks.ensure("dup-a", first[0], events, "s3cret-value")
        b, _ = hooks.ensure("dup-b", first[1], events, "s3cret-value")
        with pytest.raises(UserError, match="more than one webhook") as refused:
            hooks.ensure("dup-a", first[1], events, "s3cret-value")
        assert a in refused.value.message and b in refused.value.message
        assert {(h["name"], h["url"]) for h in hooks.list() if h["id"] in (a, b)} == {
            ("dup-a", first[0]), ("dup-b", first[1])}
        assert hooks.ensure("dup-a", first[0].replace("9001", "9003"), events,
                            "s3cret-value") == (a, False)   # a rename of its URL: fine
        with pytest.raises(PermanentError) as invalid:       # MLflow refuses the URL
            hooks.ensure("dup-c", "notaurl", events, "s3cret-value")
        assert "--url" in (invalid.value.hint or "") and "model name" not in \
            (invalid.value.hint or "")
    finally:
        client = mlflow_server.client()
        for hook in client.list_webhooks():
            if hook.name.startswith("dup-"):
                client.delete_webhook(hook.webhook_id)
