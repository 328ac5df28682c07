"""`promoter rollback` moves the alias, runs the job, and puts the alias back when the job
deploys nothing: MLflow must keep naming what the environment runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promoter.cli import app
from promoter.core.intent import InvalidIntent
from promoter.core.jobs import PROPOSAL_STARTED, Job
from promoter.core.policy import Decision
from promoter.errors import PermanentError, TransientError
from promoter.service import composition, jobs_handler
from promoter.service.audit import AuditTrail
from promoter.service.job_context import JobContext
from tests.core.test_pipeline import MODEL, MemoryRegistry

RUNTIME_SWITCH = InvalidIntent("deployment 'fraud-detector' runs runtime 'kserve' in staging, "
                               "and this version asks for 'plain'")


def _rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception, *,
              proposal_started: bool = False) -> tuple[Any, MemoryRegistry]:
    """Production runs version 2; roll back to 1 with a job that fails with ``failure``
    (the policy check `rollback` asks first allows it)."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    registry = MemoryRegistry()
    for version in ("1", "2"):
        registry.add(MODEL, version)
    registry.set_alias(MODEL, "production", "2")

    def handler_for(*args: Any, **kwargs: Any) -> jobs_handler.Handler:
        def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
            if proposal_started:        # as the pipeline records it before proposing
                ctx.record_step(PROPOSAL_STARTED, {"name": "fraud-detector"})
            raise failure
        return handle

    monkeypatch.setattr(jobs_handler, "build_job_handler", handler_for)
    monkeypatch.setattr(composition, "registry", lambda settings: registry)
    monkeypatch.setattr("promoter.policy_check.check_policy", lambda *_: Decision(()))
    result = CliRunner().invoke(app, ["--config", str(config), "rollback", MODEL, "--env",
                                      "production", "--to-version", "1"])
    return result, registry


@pytest.mark.parametrize("failure", [
    RUNTIME_SWITCH,                                           # a refusal only the job makes
    PermanentError("the serving image's base is refused by the registry (403)"),
], ids=["invalid intent", "permanent error"])
def test_a_rollback_whose_job_ends_dead_puts_the_alias_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """The job is parked dead: nothing was deployed, so the alias goes back to the version
    production still runs (before, it stayed on 1, naming what the cluster does not run),
    audited as rollback.reverted; the hint is to roll back again, since the dead job's own
    retry would deploy what the alias now names."""
    result, registry = _rollback(tmp_path, monkeypatch, failure)

    assert result.exit_code == 1, result.output
    assert registry.current_version(MODEL, "production", None) == "2"
    assert "rollback to version 1 failed (job 1 is dead); alias 'production' of " \
           f"{MODEL} moved back to version 2" in result.output
    assert f"promoter rollback '{MODEL}' --env production --to-version 1" \
        in result.exception.hint
    reverted = [entry for entry in AuditTrail(tmp_path / "state").entries()
                if entry["event"] == "rollback.reverted"]
    assert [(e["version"], e["restored"], e["job_state"]) for e in reverted] == [
        ("1", "2", "dead")]


def test_a_rollback_whose_job_waits_for_a_retry_keeps_the_alias(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transient failure leaves the job queued for a retry, which deploys what the alias
    names: the alias stays on the rollback's version, and the command says so (exit 3)."""
    result, registry = _rollback(tmp_path, monkeypatch, TransientError("GitLab answered 503"))

    assert result.exit_code == 3, result.output
    assert registry.current_version(MODEL, "production", None) == "1"
    assert "stays on version 1: job 1 is queued for a retry" in result.output
    assert not [entry for entry in AuditTrail(tmp_path / "state").entries()
                if entry["event"] == "rollback.reverted"]


def test_a_rollback_whose_job_dies_after_proposing_keeps_the_alias(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow refusing the write-back (403) parks the job after its MR for version 1 may be
    open: moving the alias back to 2 would leave MLflow naming 2 while that MR deploys 1."""
    result, registry = _rollback(tmp_path, monkeypatch,
                                 PermanentError("MLflow refused the tag (403)"),
                                 proposal_started=True)

    assert result.exit_code == 1, result.output
    assert registry.current_version(MODEL, "production", None) == "1"
    assert "stays on version 1: job 1 failed after it began proposing" in result.output
    assert not [entry for entry in AuditTrail(tmp_path / "state").entries()
                if entry["event"] == "rollback.reverted"]
