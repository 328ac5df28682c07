"""The container's command really serves its probes: `promoter` + the Deployment's args, with
the Deployment's environment and the ConfigMap's promoter.yaml laid out locally (tests/deploy/
pod.py), against a real MLflow server. Only the listen address changes (loopback, a free port).
Both overlays: the postgresql one gets PROMOTER_STATE_URL from its Secret (here the test's real
PostgreSQL), and its state must land there, not in the pod."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, requires_kubectl
from tests.deploy import built
from tests.deploy.pod import LocalPod
from tests.fixtures.mlflow_server import MlflowServer, free_port, tail, wait_for_http

pytestmark = [pytest.mark.e2e, requires_kubectl]


def status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("overlay", ["sqlite", "postgresql"])
def test_container_command_answers_its_probes_and_stops_within_the_grace_period(
        mlflow_server: MlflowServer, tmp_path: Path, overlay: str,
        request: pytest.FixtureRequest) -> None:
    pod = LocalPod(overlay, tmp_path / "pod")
    container = built.container(overlay)
    args = list(container["args"])
    port, probe_port = free_port(), free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[args.index("--probe-port") + 1] = str(probe_port)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTER_", "MLFLOW_",
                                                                        "COSIGN_"))}
    environ.update(pod.environment())
    environ.update({"MLFLOW_TRACKING_URI": mlflow_server.url, "PYTHONPATH": str(ROOT)})
    state_url = None
    if overlay == "postgresql":   # the value of the secretKeyRef the Deployment names
        assert "secretKeyRef" in built.env(overlay)["PROMOTER_STATE_URL"]["valueFrom"]
        state_url = request.getfixturevalue("postgres_url")
        environ["PROMOTER_STATE_URL"] = state_url
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:  # ENTRYPOINT ["promoter"] + args
        process = subprocess.Popen([sys.executable, "-m", "promoter", *args], env=environ,
                                   stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{probe_port}"  # probes and metrics: the probe listener
    try:
        wait_for_http(base + container["startupProbe"]["httpGet"]["path"], 120, process, log)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            code, body = status(base + container[probe]["httpGet"]["path"])
            assert code == 200, (probe, body, tail(log))
        monitor = built.one(overlay, "ServiceMonitor")
        code, body = status(base + monitor["spec"]["endpoints"][0]["path"])
        assert code == 200 and "promoter_queue_depth" in body
        if state_url is not None:   # migrated and led from PostgreSQL, nothing in the pod
            assert "promoter_reconcile_leader 1" in body
            import psycopg

            with psycopg.connect(state_url) as connection:
                assert connection.execute("SELECT count(*) FROM promoter_schema_versions"
                                          ).fetchone()[0] > 0  # type: ignore[index]
            assert not list((tmp_path / "pod").rglob("state.db"))
        assert status(base + "/ready")[0] == 404  # a path the app does not have
        assert status(f"http://127.0.0.1:{port}/healthz")[0] == 200  # the webhook port
        process.send_signal(signal.SIGTERM)
        grace = built.pod_spec(overlay)["terminationGracePeriodSeconds"]
        assert process.wait(timeout=grace) == 0, tail(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
