"""The job handler the worker runs: the first pipeline step, reading the registry.

It resolves what the environment's alias or legacy stage points at *now* — an event may be
stale by the time its job runs (the alias moved again, a decommission was undone) — reads that
model version, its run and its deployment intent, records them as the ``registry`` step, and
writes ``promoter.<env>.status=received`` back on the version. The later pipeline steps
(policy, render, image, merge request) build on the recorded step; a re-run after a crash
reuses it instead of reading MLflow again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promoter.errors import PermanentError, PromoterError

if TYPE_CHECKING:
    from promoter.core.jobs import Job
    from promoter.ports.registry import Registry
    from promoter.service.metrics import Metrics
    from promoter.service.worker import JobContext
    from promoter.settings import Settings

Handler = Callable[["Job", "JobContext"], dict[str, Any]]
REGISTRY_STEP = "registry"


def build_job_handler(settings: Settings, registry: Registry,
                      metrics: Metrics | None = None) -> Handler:
    def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
        step = ctx.step(REGISTRY_STEP)
        if step is None:
            started = time.perf_counter()
            outcome = "error"
            try:
                step = read_registry(settings, registry, job)
                outcome = "ok"
            finally:
                if metrics is not None:
                    metrics.step(REGISTRY_STEP, outcome, time.perf_counter() - started)
            ctx.record_step(REGISTRY_STEP, step)
        version = step.get("resolved_version")
        if version:
            registry.write_back(job.key.model, version, job.key.env, {"status": "received"})
        return {"outcome": "received", "action": job.key.action, "env": job.key.env,
                "requested_version": job.key.version, "resolved_version": version,
                "current": step["current"]}

    return handle


def read_registry(settings: Settings, registry: Registry, job: Job) -> dict[str, Any]:
    """What the environment's trigger points at now, and everything known about it."""
    trigger = settings.environment(job.key.env).trigger
    current = registry.current_version(job.key.model, trigger.alias, trigger.stage)
    step: dict[str, Any] = {
        "trigger": {"alias": trigger.alias, "stage": trigger.stage},
        "current": current,
        "requested_version": job.key.version,
        "resolved_version": None,
    }
    if job.key.action == "decommission" or current is None:
        # A decommission whose env is targeted again, or a promotion whose target is gone:
        # record what is current; the pipeline decides from it.
        return step
    version = registry.model_version(job.key.model, current)
    run = registry.run(version.run_id) if version.run_id else None
    step.update(
        resolved_version=current,
        model_version=version.describe(),
        run=run.describe() if run else None,
        git_commit=run.git_commit if run else None,
        artifact_location=registry.artifact_location(job.key.model, current),
        intent=registry.intent(version),
        signature=_signature(registry, job.key.model, current),
    )
    return step


def _signature(registry: Registry, model: str, version: str) -> dict[str, Any]:
    """The signature, or why there is none (a model logged without one is not an error)."""
    try:
        return {"schema": registry.signature(model, version)}
    except PermanentError as exc:
        return {"schema": None, "unavailable": exc.message}
    except PromoterError:
        raise
