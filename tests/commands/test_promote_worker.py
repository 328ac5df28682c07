"""`promoter promote` runs its job as a service worker would: under the configured lease and
with a worker id no other host or container can share."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promoter.cli import app
from promoter.commands.promote import _Printer, run_promotion
from promoter.core.jobs import Job
from promoter.errors import PolicyDenied
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


def test_promote_again_after_a_denial_reports_the_earlier_verdict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finished, denied job covers a repeat `promote` of its version: nothing runs, and
    the output says the denial is job 1's from before, with how to ask the policy again (exit
    4 still). Before, it read as a fresh "denied by policy"; JSON stays the job record."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nmlflow:\n  tracking_uri: http://x\n")
    runs: list[int] = []

    def handler_for(*args: Any, **kwargs: Any) -> jobs_handler.Handler:
        def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
            runs.append(job.id)
            raise PolicyDenied(["gate: validation failed"], version="7")
        return handle

    monkeypatch.setattr(jobs_handler, "build_job_handler", handler_for)
    monkeypatch.setattr(composition, "registry", lambda settings: None)
    args = ["--config", str(config), "promote", "fraud-detector", "--version", "7",
            "--env", "production"]

    first = CliRunner().invoke(app, args)
    again = CliRunner().invoke(app, args)
    as_json = CliRunner().invoke(app, [*args, "--output", "json"])

    assert (first.exit_code, again.exit_code, as_json.exit_code) == (4, 4, 4)
    assert runs == [1]
    assert "denied by policy:\n  gate: validation failed" in first.output
    assert "earlier" not in first.output
    assert "(existing job, done)" in again.output
    assert "denied earlier by policy (job 1's verdict from before; nothing ran now" \
        in again.output
    assert "gate: validation failed" in again.output
    assert "`promoter jobs retry 1` asks the policy again" in again.output
    record = json.loads(as_json.output)
    assert (record["id"], record["result"]["outcome"]) == (1, "denied")
