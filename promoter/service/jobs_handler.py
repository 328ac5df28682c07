"""The job handler the worker runs: one promotion or decommission through the pipeline.

The worker gives each attempt a JobContext, which is the pipeline's step log: results recorded
by an attempt that crashed are there for the next one. Step timings go to /metrics, outcomes to
the audit trail (the pipeline itself tags MLflow with a failure's reason).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promoter.core.jobs import ROLLBACK_REASON, ROLLBACK_TO
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.errors import Disposition, PolicyDenied, PromoterError, disposition_of

if TYPE_CHECKING:
    from promoter.core.config import PipelineConfig
    from promoter.core.jobs import Job
    from promoter.ports.pipeline import Progress
    from promoter.ports.registry import Registry
    from promoter.service.job_context import JobContext
    from promoter.service.metrics import Metrics
    from promoter.settings import Settings

Handler = Callable[["Job", "JobContext"], dict[str, Any]]
ANY_VERSION = "*"  # decommission keys: alias.deleted carries no version


def build_job_handler(settings: Settings, registry: Registry, metrics: Metrics | None = None,
                      progress: Progress | None = None) -> Handler:
    from promoter.service import composition

    audit = composition.audit_trail(settings)
    # Built on the first job (a bad signing key fails that job, not serve), under a lock so
    # that `serve --workers N` builds the adapters exactly once and shares them.
    built: list[tuple[PipelineConfig, Ports]] = []
    lock = threading.Lock()

    def shared_ports() -> tuple[PipelineConfig, Ports]:
        with lock:
            if not built:
                ports = composition.ports(settings, registry)
                built.append((composition.pipeline_config(settings, ports.renderer), ports))
            return built[0]

    def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
        config, ports = shared_ports()
        pipeline = Pipeline(config, ports, _StepTimer(metrics, progress))
        key = job.key
        requested = None if key.version == ANY_VERSION else key.version
        actor = str(job.payload.get("actor") or job.payload.get("source") or "unknown")
        # A rollback proposes its target over a reviewer's close; only its target (the key's
        # version may name a later alias move folded into the job since). A rollback's job
        # queued before its target was recorded names none: which version the person asked
        # for is unknown, so nothing is proposed over a close (the safe side: the close
        # stands; `promoter rollback` again asks anew).
        rollback_to = job.payload.get(ROLLBACK_TO)
        repropose = job.payload.get("reason") == ROLLBACK_REASON and isinstance(rollback_to, str)
        try:
            result = pipeline.run(PromotionJob(
                key.model, key.env, key.action, requested, repropose=repropose,
                repropose_version=rollback_to if repropose else None), ctx)
        except PromoterError as exc:
            disposition = disposition_of(exc)
            if disposition is Disposition.DENY and isinstance(exc, PolicyDenied):
                audit.record("job.denied", actor=actor, job_id=job.id, model=key.model,
                             env=key.env, version=exc.version, reasons=exc.reasons)
            elif disposition is Disposition.PARK:  # the pipeline has tagged MLflow
                audit.record("job.failed", actor=actor, job_id=job.id, model=key.model,
                             env=key.env, reason=exc.message)
            raise
        audit.record(f"job.{result.as_dict()['outcome']}", actor=actor, inputs=dict(result.inputs),
                     job_id=job.id, model=key.model, env=key.env, version=result.version,
                     mr_url=result.mr_url, image=result.image)
        closed = result.closed_mr
        if closed is not None:
            # The MR promoter closed is named in the trail, with what its version became
            # (the hook and the MR sweep leave promoter's own closes alone).
            audit.record(closed.event, actor=actor, job_id=job.id, model=key.model,
                         env=key.env, name=result.name, iid=closed.iid,
                         version=closed.version, status=closed.status,
                         replaced_by=result.version)
        return result.as_dict()

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
