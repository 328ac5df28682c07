"""`promoter rollback` moves the alias, runs a job of its own, and puts the alias back when
the job deploys nothing: MLflow must keep naming what the environment runs. With nothing to
do it is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promoter.cli import app
from promoter.core.intent import InvalidIntent
from promoter.core.jobs import PROPOSAL_STARTED, Job
from promoter.core.policy import Decision, RuleResult
from promoter.errors import PermanentError, TransientError
from promoter.policy_check import BRANCH_CHECKS, NotChecked, PolicyCheck
from promoter.service import composition, jobs_handler
from promoter.service.audit import AuditTrail
from promoter.service.job_context import JobContext
from tests.core.test_pipeline import MODEL, MemoryRegistry
from tests.fixtures.stack import queue_jobs

RUNTIME_SWITCH = InvalidIntent("deployment 'fraud-detector' runs runtime 'kserve' in staging, "
                               "and this version asks for 'plain'")


Handle = Callable[[Job, JobContext], dict[str, Any]]


def _production_on_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     handle: Handle) -> tuple[Path, MemoryRegistry]:
    """Versions 1 then 2 merged into production (the audit trail says so), its alias on 2;
    jobs run ``handle`` (the policy check `rollback` asks first allows everything)."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    registry = MemoryRegistry()
    for version in ("1", "2", "3"):
        registry.add(MODEL, version)
    registry.set_alias(MODEL, "production", "2")
    audit = AuditTrail(tmp_path / "state")
    for version in ("1", "2"):
        audit.record("mr.merge", actor="alice", model=MODEL, env="production",
                     version=version, status="merged")
    monkeypatch.setattr(jobs_handler, "build_job_handler", lambda *_, **__: handle)
    monkeypatch.setattr(composition, "registry", lambda settings: registry)
    monkeypatch.setattr("promoter.policy_check.check_policy",
                        lambda *_: PolicyCheck(Decision(())))
    return config, registry


def _invoke(config: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(config), "rollback", MODEL, "--env",
                                    "production", *args])


def _rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception, *,
              proposal_started: bool = False) -> tuple[Any, MemoryRegistry]:
    """Production runs version 2; roll back to 1 with a job that fails with ``failure``."""
    def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
        if proposal_started:        # as the pipeline records it before proposing
            ctx.record_step(PROPOSAL_STARTED, {"name": "fraud-detector"})
        raise failure

    config, registry = _production_on_2(tmp_path, monkeypatch, handle)
    return _invoke(config, "--to-version", "1"), registry


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


def _created(handled: list[Job]) -> Handle:
    def handle(job: Job, ctx: JobContext) -> dict[str, Any]:
        handled.append(job)
        return {"outcome": "created", "version": "1", "status": "mr_opened",
                "mr_url": f"local:!{7 + len(handled)}"}
    return handle


def test_a_rollback_to_what_production_runs_and_the_alias_names_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to do: refused before anything moves or runs. Before, it printed "moved from
    version 2 to 2" and reported the finished job of version 2, long merged, with its MR as
    if created now (exit 0)."""
    handled: list[Job] = []
    config, registry = _production_on_2(tmp_path, monkeypatch, _created(handled))

    result = _invoke(config, "--to-version", "2")

    assert result.exit_code == 1, result.output
    assert f"production already runs version 2 of {MODEL}, and its alias 'production' " \
           "names it: nothing to roll back" in str(result.exception)
    assert "versions it ran before: 1; name one with --to-version N" in result.exception.hint
    assert handled == [] and queue_jobs(tmp_path / "state") == []
    assert registry.current_version(MODEL, "production", None) == "2"
    assert not [entry for entry in AuditTrail(tmp_path / "state").entries()
                if entry["event"].startswith("rollback")]


def test_a_rollback_asked_again_after_its_mr_was_closed_runs_a_new_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first rollback's MR was closed unmerged: the alias names 1, production still runs
    2. Asked again, a new job proposes 1 again (its reason tells the pipeline to propose over
    that close). Before, the finished job answered: "moved from version 1 to 1", "(existing
    job, done)", the closed MR reported as created, nothing proposed, exit 0."""
    handled: list[Job] = []
    config, registry = _production_on_2(tmp_path, monkeypatch, _created(handled))
    first = _invoke(config)                     # the default target: 1
    assert first.exit_code == 0, first.output

    again = _invoke(config)

    assert again.exit_code == 0, again.output
    assert "alias 'production' of " f"{MODEL} already names version 1, but production runs " \
           "version 2: proposing version 1 again" in again.output
    assert "existing job" not in again.output and "local:!9" in again.output
    assert [job.id for job in handled] == [1, 2]
    assert (handled[1].payload["reason"], handled[1].payload["rollback_to"]) == ("rollback", "1")
    assert registry.current_version(MODEL, "production", None) == "1"


@pytest.mark.parametrize("version", ["3", "9"], ids=["newer, never deployed", "unknown"])
def test_a_rollback_to_a_version_that_never_ran_there_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """Production ran 1 then 2: --to-version 3 is a promotion, not a rollback. Refused before
    anything moves, with the versions it may go back to and how to promote instead. Before,
    the alias moved to 3, an MR opened, and the trail called it a rollback (exit 0)."""
    handled: list[Job] = []
    config, registry = _production_on_2(tmp_path, monkeypatch, _created(handled))

    result = _invoke(config, "--to-version", version)

    assert result.exit_code == 1, result.output
    assert f"version {version} of {MODEL} was never live in production (versions the audit " \
           "trail verified there: 1, 2)" in str(result.exception)
    assert f"promoter promote '{MODEL}' --version {version} --env production" \
        in result.exception.hint
    assert handled == [] and queue_jobs(tmp_path / "state") == []
    assert registry.current_version(MODEL, "production", None) == "2"
    assert not [entry for entry in AuditTrail(tmp_path / "state").entries()
                if entry["event"].startswith("rollback")]


def test_a_merge_appended_to_the_trail_by_hand_is_no_rollback_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-sealed merge of version 3 into production appended by hand after 1 and 2: the
    rollback read every line, took 3 for a version production ran, moved the alias to it and
    ran its job. Only entries before the trail's first bad line count: refused."""
    from tests.test_audit_trail import forge_after_the_last

    handled: list[Job] = []
    config, registry = _production_on_2(tmp_path, monkeypatch, _created(handled))
    forge_after_the_last(AuditTrail(tmp_path / "state"), model=MODEL, env="production",
                         version="3", status="merged")

    result = _invoke(config, "--to-version", "3")

    assert result.exit_code == 1, result.output
    assert f"version 3 of {MODEL} was never live in production (versions the audit " \
           "trail verified there: 1, 2)" in str(result.exception)
    assert handled == [] and registry.current_version(MODEL, "production", None) == "2"


def _production_after_a_decommission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     handle: Handle, *, alias: str) -> tuple[Path, MemoryRegistry]:
    """Production ran 1, was decommissioned, then ran 2 (what ran before the decommission is
    no rollback's to go back to); its alias names ``alias``."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    registry = MemoryRegistry()
    for version in ("1", "2", "3"):
        registry.add(MODEL, version)
    registry.set_alias(MODEL, "production", alias)
    audit = AuditTrail(tmp_path / "state")
    for version, status in (("1", "merged"), ("1", "decommissioned"), ("2", "merged")):
        audit.record("mr.merge", actor="alice", model=MODEL, env="production",
                     version=version, status=status)
    monkeypatch.setattr(jobs_handler, "build_job_handler", lambda *_, **__: handle)
    monkeypatch.setattr(composition, "registry", lambda settings: registry)
    monkeypatch.setattr("promoter.policy_check.check_policy",
                        lambda *_: PolicyCheck(Decision(())))
    return config, registry


def test_with_nothing_earlier_since_a_decommission_the_hints_lead_to_promoting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Production ran 1, was decommissioned, now runs 2: there is nothing to go back to. Each
    refusal says so and points at promoting a version. Before, the default said "name one
    with --to-version N", and --to-version 1 (never live since) and 2 (runs already) were
    both refused, the latter again with "name an earlier version with --to-version N"."""
    handled: list[Job] = []
    config, registry = _production_after_a_decommission(tmp_path, monkeypatch,
                                                        _created(handled), alias="2")

    default, one, two = (_invoke(config, *args)
                         for args in ((), ("--to-version", "1"), ("--to-version", "2")))

    assert (default.exit_code, one.exit_code, two.exit_code) == (1, 1, 1)
    assert "nothing to roll back to: since production was (re)started" in str(default.exception)
    assert f"verified only version 2 of {MODEL!r} live there" in str(default.exception)
    assert "version 1 of " f"{MODEL} was never live in production (versions the audit " \
           "trail verified there: 2)" in str(one.exception)
    assert "nothing to roll back" in str(two.exception)
    promote = f"promoter promote '{MODEL}' --version N --env production"
    for refused in (default, two):
        assert "--to-version" not in refused.exception.hint
        assert "no earlier version to go back to" in refused.exception.hint
        assert promote in refused.exception.hint
    assert handled == [] and queue_jobs(tmp_path / "state") == []
    assert registry.current_version(MODEL, "production", None) == "2"


def test_with_the_alias_ahead_of_what_runs_the_hint_names_that_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Since the decommission production runs only 2, but its alias moved on to 3 (its MR not
    merged): the default has no earlier version, and the hint names the one that runs, which
    then rolls the alias back."""
    handled: list[Job] = []
    config, registry = _production_after_a_decommission(tmp_path, monkeypatch,
                                                        _created(handled), alias="3")

    default = _invoke(config)
    assert default.exit_code == 1
    assert "names version 3, not what runs" in default.exception.hint
    assert f"`promoter rollback '{MODEL}' --env production --to-version 2`" \
        in default.exception.hint

    followed = _invoke(config, "--to-version", "2")
    assert followed.exit_code == 0, followed.output
    assert registry.current_version(MODEL, "production", None) == "2"
    assert [job.key.version for job in handled] == ["2"]


def test_a_rollback_with_the_alias_unset_says_it_moved_from_no_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone deleted the alias: the line read "moved from version None to 1"."""
    handled: list[Job] = []
    config, registry = _production_on_2(tmp_path, monkeypatch, _created(handled))
    registry.set_alias(MODEL, "production", None)

    result = _invoke(config, "--to-version", "1")

    assert result.exit_code == 0, result.output
    assert f"alias 'production' of {MODEL} moved from no version to 1" in result.output
    assert "None" not in result.output


UNREAD = NotChecked(BRANCH_CHECKS, "the target branch could not be read: PROMOTER_GITLAB_TOKEN "
                                   "is not set")
UNREAD_LINE = ("NOT CHECKED  deployment name owned by another model on the target branch; "
               "runtime switch under other environments' overlays (the target branch could "
               "not be read: PROMOTER_GITLAB_TOKEN is not set)")


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_rollback_says_what_its_policy_check_could_not_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    """As `policy check` says it: the NOT CHECKED line, or not_checked in JSON (the job then
    makes those checks on what it reads). Before, rollback said nothing of them."""
    config, _ = _production_on_2(tmp_path, monkeypatch, _created([]))
    monkeypatch.setattr("promoter.policy_check.check_policy",
                        lambda *_: PolicyCheck(Decision(()), (UNREAD,)))
    result = _invoke(config, "--output", output)
    assert result.exit_code == 0, result.output
    if output == "text":
        assert UNREAD_LINE in result.output.splitlines()
    else:
        assert json.loads(result.output)["not_checked"] == [
            {"checks": list(BRANCH_CHECKS), "reason": UNREAD.reason}]


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_denied_rollback_says_what_its_policy_check_could_not_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    config, registry = _production_on_2(tmp_path, monkeypatch, _created([]))
    denied = Decision((RuleResult("cel:one-gpu", False, "at most one GPU"),))
    monkeypatch.setattr("promoter.policy_check.check_policy",
                        lambda *_: PolicyCheck(denied, (UNREAD,)))
    result = _invoke(config, "--output", output)
    assert result.exit_code == 4, result.output
    assert registry.current_version(MODEL, "production", None) == "2"
    if output == "text":
        assert UNREAD_LINE in result.output.splitlines()
    else:
        assert json.loads(result.output)["not_checked"] == [
            {"checks": list(BRANCH_CHECKS), "reason": UNREAD.reason}]
