"""Three `promoter serve` replicas on one PostgreSQL: webhooks to any replica, each job run by
one replica at a time, one reconcile leader — through SIGKILLs of the replica running a job
and of the leader. Real processes: the session's mlflow server, a PostgreSQL server, a bare
git remote shared by the replicas (local provider), signed MLflow webhook posts."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from promoter.adapters.localgit_repo import LocalRepo
from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
from promoter.service.queue import JobQueue
from promoter.service.verify import sign_mlflow
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import (
    WEBHOOK_SECRET,
    ServeProcess,
    mlflow_client,
    promoter_environ,
    register_model_version,
    start_serve,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
ALIAS, ENV = "replica-test", "replica"
LEASE_SECONDS = 6
RECONCILE_SECONDS = 2  # a follower asks for the lead this often
MODELS = [f"replica-model-{n}" for n in range(6)]


def post_alias_event(serve: ServeProcess, model: str, version: str, delivery_id: str, *,
                     signed: bool = True) -> httpx.Response:
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "timestamp": "2026-11-30T10:00:00+00:00",
                       "data": {"name": model, "alias": ALIAS, "version": version}}).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": timestamp}
    if signed:
        headers["X-MLflow-Signature"] = sign_mlflow(WEBHOOK_SECRET, delivery_id, timestamp, body)
    return httpx.post(f"{serve.url}/webhooks/mlflow", content=body, headers=headers, timeout=30)


def leads(serve: ServeProcess) -> bool:
    try:
        text = httpx.get(f"{serve.url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return False
    return any(line.startswith("promoter_reconcile_leader ") and line.split()[1] == "1.0"
               for line in text.splitlines())


def the_leader(replicas: list[ServeProcess]) -> ServeProcess | None:
    leaders = [serve for serve in replicas if serve.alive() and leads(serve)]
    assert len(leaders) <= 1, "two replicas lead the reconcile loop at once"
    return leaders[0] if leaders else None


@pytest.fixture
def replicas(mlflow_server: MlflowServer, postgres_url: str,
             tmp_path: Path) -> Iterator[list[ServeProcess]]:
    remote = tmp_path / "seed"  # one bare remote shared by every replica
    LocalRepo.in_state_dir(remote, None, "main", initial_files=lambda: {"README.md": "# ops\n"})
    started: list[ServeProcess] = []
    try:
        for index in range(3):
            root = tmp_path / f"replica-{index}"
            config = write_config(
                root / "promoter.yaml", state_dir=root / "state", mlflow_url=mlflow_server.url,
                git_remote=remote / "gitops.git", reconcile_interval=RECONCILE_SECONDS,
                environments={ENV: {"trigger": {"alias": ALIAS}, "namespace": "models-replica",
                                    "approvals": 1}},
                extra={"server": {"job_lease_seconds": LEASE_SECONDS,
                                  "burst_settle_seconds": 0}})
            started.append(start_serve(config, promoter_environ(PROMOTER_STATE_URL=postgres_url),
                                       root / "serve.log", timeout=180))
        yield started
    finally:
        for serve in started:
            serve.stop()


def test_replicas_share_the_work_and_survive_sigkills(
        replicas: list[ServeProcess], mlflow_server: MlflowServer, postgres_url: str,
        tmp_path: Path) -> None:
    db = PostgresStateDB.connect(StateUrl(postgres_url), state_dir=tmp_path)
    queue = JobQueue(db)
    client = mlflow_client(mlflow_server.url)
    versions = {model: register_model_version(mlflow_server.url, model) for model in MODELS}
    wait_for(lambda: the_leader(replicas), 60, "one reconcile leader", log=replicas[0].log)

    # Every job stops at its ledger write while the test holds that lock, so the replica
    # running one can be killed mid-job, deterministically.
    blocker = psycopg.connect(postgres_url, autocommit=True)
    blocker.execute("SELECT pg_advisory_lock(hashtextextended('deployments', 0))")
    deliveries: dict[str, list[str]] = {}
    for index, model in enumerate(MODELS):
        client.set_registered_model_alias(model, ALIAS, versions[model])
        delivery_id = str(uuid.uuid4())
        deliveries[model] = [delivery_id]
        first = post_alias_event(replicas[index % 3], model, versions[model], delivery_id)
        # "covered": the reconcile leader saw the alias first and its job covers the event.
        assert first.status_code < 300 and first.json()["outcome"] in ("queued", "covered"), \
            first.text
        # The sender retries the same delivery at another replica: recognised, no new job.
        again = post_alias_event(replicas[(index + 1) % 3], model, versions[model], delivery_id)
        assert again.json()["outcome"] == "duplicate", again.text
        forged = post_alias_event(replicas[(index + 2) % 3], model, versions[model],
                                  str(uuid.uuid4()), signed=False)
        assert forged.status_code == 401

    pids = {serve.process.pid: serve for serve in replicas}

    def running_on_a_replica() -> tuple[ServeProcess, int] | None:
        for job in queue.list("running", limit=100):
            pid = int((job.lease_owner or "::").split(":")[1] or 0)
            if job.key.model in MODELS and pid in pids:
                return pids[pid], job.id
        return None

    victim, orphan = wait_for(running_on_a_replica, 120, "a job running on a replica",
                              log=replicas[0].log)
    victim_led = leads(victim)
    victim.kill()  # SIGKILL mid-job: its lease stops being renewed
    if not victim_led:  # then the reconcile leader is another replica: kill it too
        leader = wait_for(lambda: the_leader(replicas), 60, "the reconcile leader")
        leader.kill()
    survivors = [serve for serve in replicas if serve.alive()]
    assert survivors
    # The lead moves within the follower's retry time (plus a busy machine's slack).
    wait_for(lambda: the_leader(replicas), 30, "the lead to move to a surviving replica",
             log=survivors[0].log)
    blocker.close()  # the held jobs go on; the killed replica's job after its lease ran out

    def settled() -> list[object] | None:
        jobs = [job for job in queue.list(limit=1000) if job.key.model in MODELS]
        return jobs if len(jobs) >= len(MODELS) and all(
            job.state in ("done", "dead") for job in jobs) else None

    jobs = wait_for(settled, 240, "every job to finish", log=survivors[0].log)

    # Exactly one job per event, done, with its deliveries pointing at it.
    by_model: dict[str, list[object]] = {}
    for job in jobs:
        by_model.setdefault(job.key.model, []).append(job)  # type: ignore[attr-defined]
    assert sorted(by_model) == sorted(MODELS)
    for model, model_jobs in by_model.items():
        assert len(model_jobs) == 1, f"{model}: {model_jobs}"
        job = model_jobs[0]
        assert job.state == "done", (job.reason, job.result)  # type: ignore[attr-defined]
        pointed = db.read(lambda conn, m=model: {row[0] for row in conn.execute(
            "SELECT job_id FROM deliveries WHERE source = 'mlflow' AND delivery_id = ?",
            (deliveries[m][0],)).fetchall()})
        assert pointed == {job.id}  # type: ignore[attr-defined]
    # One MR per deployment, and one commit on its branch for the one version.
    mrs = db.read(lambda conn: conn.execute(
        "SELECT source_branch, state FROM local_mrs").fetchall())
    branches = sorted(str(row[0]) for row in mrs)
    assert branches == sorted(f"promote/{model}/{ENV}" for model in MODELS)
    git = tmp_path / "seed" / "gitops.git"
    for model in MODELS:
        commits = subprocess.run(
            ["git", "rev-list", "--count", f"main..promote/{model}/{ENV}"], cwd=git,
            capture_output=True, text=True, check=True).stdout.strip()
        assert commits == "1", f"{model}: {commits} commits"
    # The killed replica's job was taken over and finished by another one.
    assert not victim.alive()
    finished = queue.get(orphan)
    assert finished.state == "done" and finished.attempts >= 2
    queue.close()
