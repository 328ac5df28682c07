"""`promoter promote` runs its job as a service worker would: under the configured lease and
with a worker id no other host or container can share."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from promoter.commands.promote import _Printer, run_promotion
from promoter.core.jobs import Job
from promoter.service import composition, jobs_handler
from promoter.service.job_context import JobContext
from promoter.service.queue import JobQueue
from promoter.settings import Settings


def test_promote_holds_its_job_under_the_configured_lease_and_a_unique_worker_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.model_validate({
        "state_dir": str(tmp_path / "state"), "server": {"job_lease_seconds": 900},
        "environments": {"production": {"trigger": {"alias": "production"},
                                        "namespace": "models"}}})
    seen: list[tuple[Job, float]] = []

    def handler_for(*args: Any, **kwargs: Any) -> jobs_handler.Handler:
        def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
            queue = JobQueue.open(settings.state_dir)
            seen.append((queue.get(job.id), time.time()))  # the job as others see it now
            queue.close()
            return {"outcome": "unchanged"}
        return handle

    monkeypatch.setattr(jobs_handler, "build_job_handler", handler_for)
    monkeypatch.setattr(composition, "registry", lambda settings: None)
    record, earlier = run_promotion(settings, "fraud-detector", "7", "production",
                                    _Printer("json"))
    assert not earlier
    assert record["state"] == "done"
    (job, at), = seen
    assert job.lease_expires_at is not None and job.lease_expires_at - at > 800
    owner = job.lease_owner or ""
    assert owner.startswith(socket.gethostname()) and owner != f"cli-{os.getpid()}"
