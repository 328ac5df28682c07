"""A done job covers what it deployed, not what its event asked for (SQLite and PostgreSQL).

A promotion deploys what the alias points at when it runs. Asked for 5 with the alias moved on
to 6 (its hook lost) before it ran, it deploys 6; an alias moved back to 5 afterwards must not
count as covered by it, neither at webhook intake nor in the reconcile pass, or the deployment
runs 6 while the alias says 5, for good."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from promoter.core.jobs import Job
from promoter.errors import PolicyDenied
from promoter.service.job_context import JobContext
from promoter.service.queue import EnqueueResult, JobKey, JobQueue
from promoter.service.reconcile import ReconcileState, reconcile_once
from promoter.service.worker import Worker
from tests.fixtures.state_backends import StateBackend
from tests.intake.conftest import make_settings
from tests.intake.registry_double import Registry

V5 = JobKey("m", "5", "production", "promote")
V6 = JobKey("m", "6", "production", "promote")
V7 = JobKey("m", "7", "production", "promote")


@dataclass
class Alias:
    """The production alias, as a job resolves it when it runs (Pipeline._promote)."""

    version: str

    def deploy(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        return {"outcome": "created", "version": self.version,
                "requested_version": job.key.version}

    def deny(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        raise PolicyDenied(["tag validation_status must be 'passed'"], version=self.version)


def run_one(queue: JobQueue, handler: Any) -> Job:
    worker = Worker(queue, handler, worker_id="w", heartbeat=False)
    ran = queue.list(limit=1)[0]
    assert worker.run_once()
    return queue.get(ran.id)


def deliver(queue: JobQueue, key: JobKey, delivery: str, how: str) -> EnqueueResult:
    """One webhook delivery, through the plain or the group-committed (serve's) intake."""
    if how == "async":
        return asyncio.run(queue.enqueue_async(key, source="mlflow", delivery_id=delivery))
    return queue.enqueue(key, source="mlflow", delivery_id=delivery)


@pytest.mark.parametrize("how", ["sync", "async"])
def test_an_alias_moved_back_to_the_version_a_job_was_asked_for_but_did_not_deploy_makes_a_job(
        queue: JobQueue, how: str) -> None:
    alias = Alias("5")
    deliver(queue, V5, "d1", how)                  # alias -> 5, hook delivered
    alias.version = "6"                            # alias -> 6, its hook lost
    first = run_one(queue, alias.deploy)
    assert (first.state, first.result["version"]) == ("done", "6")
    alias.version = "5"                            # alias -> 5 again, hook delivered
    again = deliver(queue, V5, "d3", how)
    assert again.created and again.job.id != first.id
    assert run_one(queue, alias.deploy).result["version"] == "5"
    assert queue.newest_keys() == {("m", "production"): V5}


@pytest.mark.parametrize("how", ["sync", "async"])
def test_an_event_for_the_version_a_done_job_deployed_is_covered_by_it(
        queue: JobQueue, how: str) -> None:
    """The normal case makes no second job: the same version resolved, or a late hook for
    the version the alias had moved on to before the job ran."""
    alias = Alias("5")
    deliver(queue, V5, "d1", how)
    done = run_one(queue, alias.deploy)
    repeat = deliver(queue, V5, "d2", how)         # the alias set to 5 again
    assert (repeat.created, repeat.job.id) == (False, done.id)

    assert deliver(queue, V7, "d3", how).created   # alias -> 7: a new job
    alias.version = "6"                            # alias -> 6 before that job ran
    ran_for_6 = run_one(queue, alias.deploy)
    late = deliver(queue, V6, "d4", how)           # 6's hook, delivered after the job ran
    assert (late.created, late.job.id) == (False, ran_for_6.id)
    assert len(queue.list()) == 2
    assert queue.newest_keys() == {("m", "production"): V6}


def test_a_denial_covers_the_version_it_denied_not_the_one_asked_for(queue: JobQueue) -> None:
    alias = Alias("5")
    queue.enqueue(V5, source="mlflow", delivery_id="d1")
    alias.version = "6"
    denied = run_one(queue, alias.deny)
    assert (denied.state, denied.result["outcome"], denied.result["version"]) == (
        "done", "denied", "6")
    assert not queue.enqueue(V6, source="mlflow", delivery_id="d2").created
    # 5 was never judged: the alias moved back to it is a job.
    assert queue.enqueue(V5, source="mlflow", delivery_id="d3").created


@pytest.mark.parametrize("result", [{}, {"outcome": "denied", "reasons": ["no tag"]},
                                    {"outcome": "skipped", "version": None}])
def test_a_done_job_whose_result_names_no_version_covers_its_key_as_before(
        queue: JobQueue, result: dict[str, Any]) -> None:
    """Rows written before results named the version, and runs that resolved none."""
    job = queue.enqueue(V5).job
    assert queue.claim("w") is not None
    queue.complete(job.id, "w", result)
    assert not queue.enqueue(V5).created
    assert queue.enqueue(V6).created
    assert queue.newest_keys()[("m", "production")] == V6


@pytest.mark.parametrize("deployed", ["6", "5"])
def test_reconcile_brings_back_a_target_the_newest_job_did_not_deploy(
        state_backend: StateBackend, tmp_path: Path, deployed: str) -> None:
    """Record 5, MLflow 5, newest job asked for 5: it deployed 6 (the alias was there when it
    ran, the hook of that move and of the move back lost), so the pass promotes 5 again. When
    it did deploy 5, the pass plans nothing (no needless job)."""
    settings = make_settings(tmp_path / "settings")
    registry = Registry()
    registry.add("m", "5", 10_000)
    registry.add("m", "6", 20_000)
    registry.model_aliases["m"] = {"production": "5"}
    queue, state = state_backend.queue(), ReconcileState(state_backend.open())

    def reconcile() -> set[tuple[object, ...]]:
        report = reconcile_once(settings, registry, queue, state)  # type: ignore[arg-type]
        return {(j["model"], j["version"], j["env"], j["created"]) for j in report.jobs}

    try:
        assert reconcile() == {("m", "5", "production", True)}   # recorded: 5
        alias = Alias(deployed)
        registry.model_aliases["m"] = {"production": deployed}   # hook lost
        assert run_one(queue, alias.deploy).result["version"] == deployed
        registry.model_aliases["m"] = {"production": "5"}        # hook lost
        expected = {("m", "5", "production", True)} if deployed == "6" else set()
        assert reconcile() == expected
        assert reconcile() == set()                              # the job is queued now
    finally:
        state.close()
        queue.close()
