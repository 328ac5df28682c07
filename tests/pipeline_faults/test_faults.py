"""Dependencies failing under a real pipeline run: GitLab 5xx / 429 / lost responses, MLflow
down for 30 s, the OCI registry down. The job retries and ends exactly as a fault-free run
does (one MR, one commit). Permanent failures park the job with its reason, shown by
`promoter jobs show` and tagged on the MLflow version.

Every run is the real handler and Worker in a subprocess (tests/pipeline_faults/
crash_runner.py) with a small job backoff, so retries come in about a second.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mlflow_server import MlflowServer, start_mlflow_server
from tests.fixtures.stack import make_standin, version_tags
from tests.gitlab.standin.server import StandIn
from tests.pipeline_faults.conftest import GitLabReference, Reference, Stack
from tests.pipeline_faults.harness import (
    ENV,
    Case,
    Registry,
    jobs_show,
    new_case,
    register_model,
    restart_mlflow,
    verify_signature,
)

pytestmark = pytest.mark.e2e

MANIFESTS = "manifests/"
COMMITS, MRS = r"/repository/commits$", r"/merge_requests$"
OUTAGE_SECONDS = 30.0  # the MLflow outage
# Attempts are not the bound here (the deadline is): refused connections fail in
# milliseconds, so on a loaded machine, where MLflow's restart alone can take tens of seconds,
# 60 quick attempts ran out before the outage ended (seen in a full run).
RETRYING_RUNNER = ("--max-attempts", "400", "--backoff-base", "0.5", "--backoff-cap", "2",
                   "--deadline", "180")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    server = make_standin(tmp_path / "standin")
    yield server
    server.stop()


def manifests(files: dict[str, str]) -> dict[str, str]:
    return {path: text for path, text in files.items() if path.startswith(MANIFESTS)}


def run_to_the_end(case: Case, job_id: int, *args: str) -> dict[str, Any]:
    code = case.run(job_id, *args, label="run")
    job = case.job(job_id)
    assert code == 0 and job["state"] in ("done", "dead"), case.log("run")
    return job


def assert_one_mr_one_commit(case: Case, reference: Reference) -> dict[str, Any]:
    [mr] = case.open_mrs()
    assert mr["source_branch"] == reference.branch
    assert case.commits_ahead(mr["source_branch"]) == 1
    assert case.commit_count("main") == reference.main_commits
    return mr


# --------------------------------------------------------------------------- GitLab
GITLAB_FAULTS = [
    pytest.param([("GET", MRS, "503", {"times": 4}),           # the client gives up once
                  ("POST", COMMITS, "502", {"apply": True})],  # committed, then a 502
                 1, id="5xx"),
    pytest.param([("POST", COMMITS, "429", {"retry_after": 60})], 2, id="429-retry-after"),
    pytest.param([("POST", COMMITS, "lost", {}), ("POST", MRS, "lost", {})], 1,
                 id="lost-responses"),
]


@pytest.mark.parametrize(("faults", "attempts"), GITLAB_FAULTS)
def test_gitlab_faults_end_like_the_fault_free_run(
        stack: Stack, reference: Reference, gitlab_reference: GitLabReference,
        standin: StandIn, faults: list[tuple[str, str, str, dict[str, Any]]],
        attempts: int) -> None:
    # A Retry-After beyond what promoter waits in-line becomes a job retry (honoured, capped
    # by the runner's 1 s backoff cap); 5xx and lost responses are re-checked in-line.
    case = stack.case(f"gitlab-{'-'.join(f[2] for f in faults)}", gitlab=standin,
                      gitlab_wait=2)
    injected = [standin.fault(method, path, kind, **options)
                for method, path, kind, options in faults]
    job = run_to_the_end(case, case.enqueue(stack.model, stack.version))

    assert [fault.hits for fault in injected] == [fault.times for fault in injected]
    assert job["state"] == "done" and job["attempts"] == attempts, case.log("run")
    if attempts > 1:
        assert "RETRYING attempt 1: TransientError: GitLab rate-limited" in case.log("run")
    mr = assert_one_mr_one_commit(case, reference)
    assert standin.commits_created == 1  # no duplicate commit, not even an unreachable one
    assert (mr["title"], mr["description"]) == (gitlab_reference.mr["title"],
                                                gitlab_reference.mr["description"])
    assert manifests(case.files(mr["source_branch"])) == manifests(gitlab_reference.files)
    assert job["result"]["image"] == gitlab_reference.job["result"]["image"]


def forbid(standin: StandIn, method: str, path: str) -> None:
    """GitLab answering 403 (e.g. a token without write access to the branch)."""
    import re

    handle = standin.handle

    def forbidding(verb: str, raw: str, headers: dict[str, str], body: bytes) -> Any:
        if verb == method and re.search(path, raw.partition("?")[0]):
            return 403, {"Content-Type": "application/json"}, b'{"message":"403 Forbidden"}'
        return handle(verb, raw, headers, body)

    standin.handle = forbidding  # type: ignore[method-assign,assignment]


def test_gitlab_403_parks_the_job_dead_with_its_reason(stack: Stack, standin: StandIn) -> None:
    model = "Forbidden Model"
    version = register_model(stack.mlflow.url, model)
    case = stack.case("gitlab-403", gitlab=standin, prefix="forbidden")
    forbid(standin, "POST", COMMITS)
    job_id = case.enqueue(model, version)
    job = run_to_the_end(case, job_id)

    assert job["state"] == "dead" and job["attempts"] == 1, case.log("run")
    assert "403" in job["reason"]
    shown = jobs_show(case, job_id)
    assert shown.returncode == 0, shown.stderr
    assert "dead" in shown.stdout and "403" in shown.stdout
    tags = version_tags(stack.mlflow.url, model, version)
    assert tags[f"promoter.{ENV}.status"] == "failed"
    assert "403" in tags[f"promoter.{ENV}.reason"]
    assert standin.commits_created == 0 and not case.open_mrs()


# --------------------------------------------------------------------------- policy
def test_policy_denial_is_done_denied_with_its_reason(stack: Stack) -> None:
    model = "Unvalidated Model"
    version = register_model(stack.mlflow.url, model, validation_status="")  # tag dropped
    case = stack.case("policy-denied")
    job_id = case.enqueue(model, version)
    job = run_to_the_end(case, job_id)

    assert job["state"] == "done" and job["result"]["outcome"] == "denied", job
    assert "validation_status" in job["reason"]
    shown = jobs_show(case, job_id)
    assert shown.returncode == 0, shown.stderr
    assert "denied" in shown.stdout and "validation_status" in shown.stdout
    tags = version_tags(stack.mlflow.url, model, version)
    assert tags[f"promoter.{ENV}.status"] == "denied"
    assert "validation_status" in tags[f"promoter.{ENV}.reason"]
    assert "image" not in job["steps"] and not case.open_mrs()


# --------------------------------------------------------------------------- outages
def wait_retrying(case: Case, job_id: int, mentions: str) -> dict[str, Any]:
    job = case.wait_for(job_id, lambda j: j["state"] == "retrying", 90, "retrying")
    assert mentions in (job["reason"] or ""), job
    return job


def finish(case: Case, job_id: int, process: Any) -> dict[str, Any]:
    try:
        code = process.wait(timeout=180)
    except Exception:
        process.kill()
        process.wait(timeout=30)
        raise
    job = case.job(job_id)
    assert code == 0 and job["state"] == "done", case.log("run")
    assert job["attempts"] >= 2 and job["result"]["status"] == "mr_opened", job
    return job


@pytest.fixture
def private_mlflow(tmp_path: Path) -> Iterator[Callable[[MlflowServer | None], MlflowServer]]:
    """A private MLflow server the test may stop and bring back (same port, same sqlite)."""
    servers = [start_mlflow_server(tmp_path / "mlflow")]

    def current(replacement: MlflowServer | None = None) -> MlflowServer:
        if replacement is not None:
            servers.append(replacement)
        return servers[-1]

    yield current
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def test_mlflow_down_for_30_seconds(stack: Stack, reference: Reference, tmp_path: Path,
                                    private_mlflow: Callable[..., MlflowServer]) -> None:
    mlflow = private_mlflow()
    version = register_model(mlflow.url, stack.model)
    case = new_case(tmp_path / "case", mlflow_url=mlflow.url,
                    repository=stack.repository("mlflow-outage"), image_cache=stack.warm_cache,
                    launcher=stack.launcher)
    job_id = case.enqueue(stack.model, version)

    mlflow.stop()
    down_since = time.monotonic()
    process = case.runner(job_id, *RETRYING_RUNNER, label="run")
    try:
        wait_retrying(case, job_id, "MLflow")
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
        assert case.job(job_id)["state"] in ("retrying", "running")  # still not through
        mlflow = private_mlflow(restart_mlflow(mlflow))
    finally:
        job = finish(case, job_id, process)

    assert_one_mr_one_commit(case, reference)
    verify_signature(case, job["result"]["image"])
    tags = version_tags(mlflow.url, stack.model, version)
    assert tags[f"promoter.{ENV}.status"] == "mr_opened"


def test_registry_down_then_back(stack: Stack, reference: Reference, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry").start()
    try:
        case = new_case(tmp_path / "case", mlflow_url=stack.mlflow.url,
                        repository=f"{registry.address}/models/{{name}}",
                        image_cache=stack.warm_cache, launcher=stack.launcher)
        job_id = case.enqueue(stack.model, stack.version)
        registry.stop()
        process = case.runner(job_id, *RETRYING_RUNNER, label="run")
        try:
            wait_retrying(case, job_id, "registry")
            registry.start()  # same port, same data directory
        finally:
            job = finish(case, job_id, process)
        assert_one_mr_one_commit(case, reference)
        assert job["result"]["image"].startswith(f"{registry.address}/models/")
        verify_signature(case, job["result"]["image"])
        assert job["steps"]["image"]["digest"] == reference.job["steps"]["image"]["digest"]
    finally:
        registry.stop()
