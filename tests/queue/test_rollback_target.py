"""A rollback's job proposes over a reviewer's close of an MR only for the version the rollback
asked for (its payload's rollback_to). The job deploys what the alias names when it runs: a
later alias move folded into the still-queued job, or a retry after the alias moved on, makes
it resolve another version, whose reviewer's close stands."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from promoter.core.jobs import Job, JobKey, JobState
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.service import composition, jobs_handler
from promoter.service.queue import JobQueue
from tests.core.test_pipeline import MODEL, RENDERER, SETTINGS, MemorySteps, World
from tests.core.test_pipeline import world as world  # the pipeline fakes, as a fixture

V1 = JobKey("fraud-detector", "1", "production", "promote")
V2 = JobKey("fraud-detector", "2", "production", "promote")
V3 = JobKey("fraud-detector", "3", "production", "promote")
ROLLBACK_TO_1 = {"source": "cli", "actor": "cli:alice", "reason": "rollback", "rollback_to": "1"}


class _Ran(Exception):
    """Stops the handler once the pipeline was given its job."""


def _promotion_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: Job) -> PromotionJob:
    """The PromotionJob the worker's handler gives the pipeline for ``job``."""
    given: list[PromotionJob] = []

    class Recording:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def run(self, promotion: PromotionJob, steps: Any) -> Any:
            given.append(promotion)
            raise _Ran

    monkeypatch.setattr(jobs_handler, "Pipeline", Recording)
    monkeypatch.setattr(composition, "ports",
                        lambda settings, registry: types.SimpleNamespace(renderer=None))
    monkeypatch.setattr(composition, "pipeline_config", lambda settings, renderer: object())
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    handle = jobs_handler.build_job_handler(settings, object())  # type: ignore[arg-type]
    with pytest.raises(_Ran):
        handle(job, MemorySteps())  # type: ignore[arg-type]
    [promotion] = given
    return promotion


def test_a_webhook_folded_into_a_queued_rollback_job_keeps_the_rollback_target(
        queue: JobQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback to 1 waits behind a running job; CI then moves the alias on to 3 and its
    webhook is folded into the rollback's job, which keeps the rollback's payload. The
    pipeline is told to propose over a close for 1 only. Before, it was told to propose
    whatever it resolved (3) over a reviewer's close."""
    queue.enqueue(V2, {"source": "mlflow"})
    assert queue.claim("serve") is not None
    rollback = queue.enqueue(V1, ROLLBACK_TO_1, fresh=True)
    assert rollback.created
    hook = queue.enqueue(V3, {"source": "mlflow", "actor": "mlflow"})
    assert not hook.created and hook.job.id == rollback.job.id

    promotion = _promotion_job(tmp_path, monkeypatch, queue.get(rollback.job.id))

    assert (promotion.requested_version, promotion.repropose,
            promotion.repropose_version) == ("3", True, "1")


def test_a_rollback_job_queued_before_its_target_was_recorded_proposes_over_no_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job queued by an older promoter carries reason=rollback without rollback_to: which
    version the person asked for is unknown (a later webhook may have been folded in), so the
    safe side: no reviewer's close is overridden."""
    legacy = Job(1, V3, JobState.QUEUED, 0, {"source": "cli", "reason": "rollback"}, {}, None,
                 0.0, 0.0, 0.0, None, None)

    promotion = _promotion_job(tmp_path, monkeypatch, legacy)

    assert (promotion.requested_version, promotion.repropose) == ("3", False)


def _propose(world: World, alias: str, job: PromotionJob) -> tuple[str, bool]:
    world.registry.set_alias(MODEL, "production", alias)
    ports = Ports(world.registry, world.provider, world.ledger, RENDERER, world.images,
                  world.signer)
    Pipeline(world.settings.pipeline_config(), ports).run(job, MemorySteps())
    [proposal] = world.provider.proposals
    return proposal.version, proposal.repropose


@pytest.mark.parametrize("job", [
    PromotionJob(MODEL, "production", "promote", "1", repropose=True),
    PromotionJob(MODEL, "production", "promote", "3", repropose=True, repropose_version="1"),
], ids=["retried after the alias moved on", "a later alias move folded in"])
def test_a_rollback_job_resolving_another_version_proposes_it_without_override(
        world: World, job: PromotionJob) -> None:
    """The alias moved on to 3 since the rollback to 1: the job proposes 3, as any webhook
    would, and a reviewer's close of 3's MR stands. Before, 3 went out with repropose."""
    assert _propose(world, "3", job) == ("3", False)


def test_a_rollback_job_resolving_its_target_proposes_over_a_close(world: World) -> None:
    job = PromotionJob(MODEL, "production", "promote", "3", repropose=True,
                       repropose_version="1")
    assert _propose(world, "1", job) == ("1", True)
