"""A model the reconcile pass cannot look at is a failure of the pass, never taken for gone,
and looked up by each pass until one succeeds (a registry double: tests/intake/
registry_double.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from promoter.core.reconcile import Observed
from promoter.errors import AuthError, NotFoundError, PermanentError
from promoter.service.queue import JobQueue
from promoter.service.reconcile import PassReport, ReconcileState, reconcile_once
from promoter.settings import Environment, Settings, Trigger
from tests.intake.conftest import make_settings
from tests.intake.registry_double import Registry, finish_jobs


@dataclass
class Pass:
    settings: Settings
    registry: Registry
    queue: JobQueue
    state: ReconcileState

    def __call__(self, **options: int) -> PassReport:
        return reconcile_once(self.settings, self.registry, self.queue,  # type: ignore[arg-type]
                              self.state, **options)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Pass]:
    settings = make_settings(tmp_path)
    made = Pass(settings, Registry(), JobQueue.open(settings.state_dir),
                ReconcileState(settings.state_dir))
    yield made
    made.state.close()
    made.queue.close()


def jobs(report: PassReport) -> set[tuple[object, ...]]:
    return {(j["model"], j["version"], j["env"]) for j in report.jobs}


def test_a_refused_stage_lookup_is_a_failure_and_its_change_is_looked_at_again(
        run: Pass) -> None:
    """A proxy's bare 404 (ENDPOINT_NOT_FOUND: PermanentError, not NotFoundError) said
    nothing about the model. Before, it was skipped as deleted, not reported, and the cursor
    moved past its version's stage move (to another model's later change) for good."""
    registry = run.registry
    registry.add("b", "1", 10_000, Production="1")
    registry.add("z", "1", 10_000)
    run()
    finish_jobs(run.queue)
    registry.add("b", "2", 50_000, Production="2")       # a stage move: no webhook
    registry.add("z", "2", 110_000)                      # another model, a minute later
    registry.fail["b"] = PermanentError("cannot read the stages of 'b': MLflow answered 404 "
                                        "ENDPOINT_NOT_FOUND")

    refused = run()
    assert [(f["model"], f["kind"]) for f in refused.failed] == [("b", "permanent")]
    assert refused.exit_code == 1          # a fault to fix, as `reconcile --once` ends
    assert run.state.retry() == {"b"}      # looked up again, though the cursor moved on

    del registry.fail["b"]
    assert jobs(run(slack_ms=0)) == {("b", "2", "production")}
    assert run.state.retry() == set()


def test_mlflows_own_not_found_on_a_stage_lookup_is_the_model_deleted(run: Pass) -> None:
    run.registry.add("b", "1", 10_000, Production="1")
    run.registry.fail["b"] = NotFoundError("registered model 'b' does not exist")
    report = run()
    assert report.failed == [] and report.exit_code == 0 and report.jobs == []


def test_a_model_failing_every_pass_does_not_hold_the_cursor(run: Pass) -> None:
    """Before, the cursor stayed at the failing model's change for good: every pass read
    again every version changed since, and looked each of their models up (10, 20, 30...)."""
    registry = run.registry
    registry.add("b", "1", 10_000, Production="1")
    run()
    finish_jobs(run.queue)
    registry.add("b", "2", 50_000, Production="2")       # a stage move: no webhook
    registry.fail["b"] = PermanentError("cannot read the stages of 'b': MLflow answered 404 "
                                        "ENDPOINT_NOT_FOUND")
    at = 100_000
    for n in range(4):
        for i in range(10):                              # 10 other models change each pass
            at += 10_000
            registry.add(f"m{n}_{i}", "1", at)
        report = run()
        assert [f["model"] for f in report.failed] == ["b"] and report.exit_code == 1
        assert report.changed_versions <= 12 and report.stage_lookups <= 11  # 1: the slack
        assert run.state.cursor() == at
    del registry.fail["b"]
    assert jobs(run()) == {("b", "2", "production")}     # its change, found at last


def test_reconcile_once_ends_with_1_for_a_refused_lookup(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A refusal needs an operator (3 would say "MLflow may answer next time")."""
    from promoter import cli
    from promoter.commands import reconcile as command
    from promoter.service import composition
    from promoter.service.mr_sweep import SweepReport

    monkeypatch.setenv("PROMOTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(composition, "registry", lambda settings: None)
    monkeypatch.setattr(command, "_mlflow_pass", lambda settings, registry, leading: PassReport(
        models=2, failed=[{"model": "a", "error": "timed out", "kind": "unavailable"},
                          {"model": "b", "error": "404 ENDPOINT_NOT_FOUND",
                           "kind": "permanent"}]))
    monkeypatch.setattr(command, "_mr_sweep", lambda settings, registry: (SweepReport(), None))
    with pytest.raises(SystemExit) as ended:
        cli.main(["reconcile", "--once"])
    assert ended.value.code == 1
    assert "404 ENDPOINT_NOT_FOUND" in capsys.readouterr().out


def test_a_403_on_one_models_stages_fails_that_model_not_the_pass(run: Pass) -> None:
    """Before, the AuthError escaped the pass at that model, every pass: the models after
    it were never reconciled (c's alias moved with its hook lost) and the cursor froze."""
    registry = run.registry
    for name in ("a", "c"):
        registry.add(name, "1", 10_000)
        registry.model_aliases[name] = {"production": "1"}
    registry.add("b", "1", 10_000, Production="1")
    run()
    finish_jobs(run.queue)
    registry.add("b", "2", 50_000, Production="2")
    registry.fail["b"] = AuthError("cannot read the stages of 'b': 403 PERMISSION_DENIED")
    registry.add("c", "2", 20_000)
    registry.model_aliases["c"] = {"production": "2"}

    report = run()
    assert jobs(report) == {("c", "2", "production")}
    assert [(f["model"], f["kind"]) for f in report.failed] == [("b", "unauthorized")]
    assert report.exit_code == 1
    assert 20_000 <= run.state.cursor() <= 50_000   # past c's change, not past b's

    del registry.fail["b"]
    assert jobs(run(slack_ms=0)) == {("b", "2", "production")}


def test_credentials_refused_for_the_listing_fail_the_whole_pass(run: Pass) -> None:
    run.registry.add("a", "1", 10_000)
    run.registry.fail["*listing*"] = AuthError("cannot search model versions: 401")
    with pytest.raises(AuthError):
        run()
    assert run.state.cursor() == 0


def stage_triggered(settings: Settings, **stages: str) -> Settings:
    return settings.model_copy(update={"environments": {
        env: Environment(trigger=Trigger(stage=stage), namespace=env)
        for env, stage in stages.items()}})


def test_an_environment_added_to_the_config_is_looked_up_without_a_version_change(
        run: Pass) -> None:
    """Before, the recorded stage targets of a model whose versions did not change were
    reused per environment: qa (Staging) was never looked up, version 1 never promoted."""
    run.registry.add("m", "1", 10_000, Staging="1")
    run.registry.add("m", "2", 10_000, Production="2")
    run.registry.add("other", "1", 100_000)
    run.settings = stage_triggered(run.settings, production="Production")
    assert jobs(run()) == {("m", "2", "production")}
    finish_jobs(run.queue)
    run.settings = stage_triggered(run.settings, production="Production", qa="Staging")
    assert jobs(run()) == {("m", "1", "qa")}
    finish_jobs(run.queue)
    assert jobs(run(slack_ms=0)) == set()


def test_a_trigger_moved_to_another_stage_is_looked_up(run: Pass) -> None:
    run.registry.add("m", "1", 10_000, Staging="1")
    run.registry.add("m", "2", 10_000, Production="2")
    run.registry.add("other", "1", 100_000)
    run.settings = stage_triggered(run.settings, production="Production")
    run()
    finish_jobs(run.queue)
    run.settings = stage_triggered(run.settings, production="Staging")
    assert jobs(run()) == {("m", "1", "production")}


def test_a_record_from_before_the_stage_was_kept_is_looked_up_once(run: Pass) -> None:
    run.registry.add("m", "1", 10_000, Staging="1")
    run.registry.add("other", "1", 100_000)
    run.settings = stage_triggered(run.settings, qa="Staging")
    run.state.save("m", {"qa": Observed(None, "1")})   # as an older promoter left it
    run.state.save_cursor(200_000)
    assert jobs(run()) == set()
    assert run.registry.lookups == ["m", "other"]      # once each, then the record says
    assert run.state.observed()["m"]["qa"] == Observed(None, "1", "Staging")
    assert run().stage_lookups == 0
