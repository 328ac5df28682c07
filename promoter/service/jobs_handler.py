"""The job handler the worker runs: one promotion or decommission through the pipeline.

The worker gives each attempt a JobContext, which is the pipeline's step log: results recorded
by an attempt that crashed are there for the next one. Step timings go to /metrics, outcomes to
the audit trail (the pipeline itself tags MLflow with a failure's reason).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.errors import AuthError, PermanentError, PolicyDenied, UserError

if TYPE_CHECKING:
    from promoter.core.jobs import Job
    from promoter.ports.pipeline import Progress
    from promoter.ports.registry import Registry
    from promoter.service.metrics import Metrics
    from promoter.service.worker import JobContext
    from promoter.settings import Settings

Handler = Callable[["Job", "JobContext"], dict[str, Any]]
ANY_VERSION = "*"  # decommission keys: alias.deleted carries no version


def build_job_handler(settings: Settings, registry: Registry, metrics: Metrics | None = None,
                      progress: Progress | None = None) -> Handler:
    from promoter.service import composition
    from promoter.service.audit import AuditTrail

    audit = AuditTrail(settings.state_dir)
    built: list[Ports] = []  # made on the first job: a bad key fails that job, not serve

    def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
        if not built:
            built.append(composition.ports(settings, registry))
        pipeline = Pipeline(settings, built[0], _StepTimer(metrics, progress))
        key = job.key
        requested = None if key.version == ANY_VERSION else key.version
        try:
            result = pipeline.run(PromotionJob(key.model, key.env, key.action, requested), ctx)
        except PolicyDenied as exc:
            audit.record("job.denied", job_id=job.id, model=key.model, env=key.env,
                         reasons=exc.reasons)
            raise
        except (PermanentError, UserError, AuthError) as exc:  # the pipeline tagged MLflow
            audit.record("job.failed", job_id=job.id, model=key.model, env=key.env,
                         reason=exc.message)
            raise
        audit.record(f"job.{result.get('outcome')}", job_id=job.id, model=key.model,
                     env=key.env, version=result.get("version"), mr_url=result.get("mr_url"),
                     image=result.get("image"))
        return result

    return handle


class _StepTimer:
    """Progress that also measures each step (time since the previous report)."""

    def __init__(self, metrics: Metrics | None, forward: Progress | None) -> None:
        self.metrics = metrics
        self.forward = forward
        self.last = time.perf_counter()

    def __call__(self, step: str, outcome: str, detail: str = "") -> None:
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.step(step, outcome, now - self.last)
        self.last = now
        if self.forward is not None:
            self.forward(step, outcome, detail)
