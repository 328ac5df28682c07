"""A model missing from the registered-model listing is decommissioned only once MLflow says
it does not exist: MLflow's SQL store pages that listing by offset, so a model deleted on an
earlier page while the pass pages through shifts a live one past the page boundary unseen."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promoter.adapters.mlflow import MlflowRegistry
from promoter.adapters.mlflow import registry as mlflow_registry
from promoter.errors import TransientError
from promoter.service.queue import JobKey, JobQueue
from promoter.service.reconcile import PassReport, ReconcileState, reconcile_once
from promoter.settings import Environment, Trigger
from tests.intake.conftest import make_settings
from tests.intake.registry_double import Registry, finish_jobs


def actions(report: PassReport) -> list[tuple[object, object]]:
    return sorted((job["model"], job["action"]) for job in report.jobs)


def to_production(client: Any, model: str, version: str, stage: str = "Production") -> None:
    with warnings.catch_warnings():   # legacy stages are deprecated, still used
        warnings.simplefilter("ignore")
        client.transition_model_version_stage(model, version, stage)


@pytest.fixture
def sql_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowRegistry]:
    """MLflow's own SQL store in process (what `mlflow server` pages with), three models to
    a page, four models each with version 1 in Production."""
    monkeypatch.setattr(mlflow_registry, "PAGE", 3)
    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = registry._client
    for name in ("a", "b", "c", "d"):
        client.create_registered_model(name)
        version = client.create_model_version(name, source=str(tmp_path / "art" / name))
        to_production(client, name, version.version)
    yield registry


def test_a_model_shifted_past_a_page_by_a_deletion_is_kept_not_decommissioned(
        sql_registry: MlflowRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, d (first of page 2) was never listed after a (page 1) was deleted mid-listing:
    the pass decommissioned live d and dropped its record, so d's later stage move was never
    seen."""
    settings = make_settings(tmp_path / "state").model_copy(update={"environments": {
        "production": Environment(trigger=Trigger(stage="Production"), namespace="p")}})
    queue, state = JobQueue.open(settings.state_dir), ReconcileState(settings.state_dir)
    client = sql_registry._client
    try:
        assert actions(reconcile_once(settings, sql_registry, queue, state)) == [
            ("a", "promote"), ("b", "promote"), ("c", "promote"), ("d", "promote")]
        finish_jobs(queue)
        listing = client.search_registered_models

        def delete_a_after_page_1(**options: Any) -> Any:
            page = listing(**options)
            if options.get("page_token") is None:
                client.delete_registered_model("a")    # someone deletes a meanwhile
            return page

        monkeypatch.setattr(client, "search_registered_models", delete_a_after_page_1)
        shifted = reconcile_once(settings, sql_registry, queue, state)
        assert actions(shifted) == [] and shifted.unlisted == ["d"]
        assert shifted.failed == []
        assert state.observed()["d"]["production"].stage_version == "1"   # record kept
        monkeypatch.setattr(client, "search_registered_models", listing)

        assert actions(reconcile_once(settings, sql_registry, queue, state)) == [
            ("a", "decommission")]                                     # a really is gone
        finish_jobs(queue)
        to_production(client, "d", "1", "Archived")                    # no webhook for this
        assert actions(reconcile_once(settings, sql_registry, queue, state)) == [
            ("d", "decommission")]
    finally:
        state.close()
        queue.close()


@pytest.fixture
def double(tmp_path: Path) -> Iterator[tuple[Registry, JobQueue, ReconcileState]]:
    settings = make_settings(tmp_path)
    queue, state = JobQueue.open(settings.state_dir), ReconcileState(settings.state_dir)
    yield Registry(), queue, state
    state.close()
    queue.close()


def test_a_missing_model_that_cannot_be_looked_up_is_a_failure_and_kept(
        double: tuple[Registry, JobQueue, ReconcileState], tmp_path: Path) -> None:
    registry, queue, state = double
    settings = make_settings(tmp_path)
    registry.add("m", "1", 10_000, Production="1")
    reconcile_once(settings, registry, queue, state)  # type: ignore[arg-type]

    class Unlisted(Registry):
        def models(self) -> Iterator[Any]:
            return iter(())

        def aliases(self, model: str) -> dict[str, str]:
            raise TransientError("MLflow did not answer")

    unlisted = Unlisted(model_ms=dict(registry.model_ms), versions=list(registry.versions))
    report = reconcile_once(settings, unlisted, queue, state)  # type: ignore[arg-type]
    assert report.jobs == [] and [f["model"] for f in report.failed] == ["m"]
    assert state.observed()["m"]["production"].stage_version == "1"


def test_a_new_models_change_the_listing_missed_is_looked_up_again(
        double: tuple[Registry, JobQueue, ReconcileState], tmp_path: Path) -> None:
    """No record, no job: only its version's change says it exists. The cursor moves past
    that change, so the model is noted to be looked up until a pass has listed it."""
    registry, queue, state = double
    settings = make_settings(tmp_path)
    registry.add("old", "1", 10_000)
    reconcile_once(settings, registry, queue, state)  # type: ignore[arg-type]
    registry.add("new", "1", 50_000, Production="1")
    registry.add("old", "2", 90_000)

    class Missing(Registry):
        def models(self) -> Iterator[Any]:
            return (model for model in super().models() if model.name != "new")

    missing = Missing(model_ms=dict(registry.model_ms), versions=list(registry.versions),
                      stages=registry.stages)
    report = reconcile_once(settings, missing, queue, state)  # type: ignore[arg-type]
    assert report.unlisted == ["new"] and state.retry() == {"new"}
    assert [(j["model"], j["version"]) for j in reconcile_once(
        settings, registry, queue, state, slack_ms=0).jobs] == [("new", "1")]  # type: ignore[arg-type]


def test_a_model_found_gone_is_not_asked_for_again(
        double: tuple[Registry, JobQueue, ReconcileState], tmp_path: Path) -> None:
    """Before, every deleted model that ever had a job was read each pass, for good (and a
    timeout on that read reported the long-gone model as a failure of the pass)."""
    _, queue, state = double
    settings = make_settings(tmp_path)
    asked: list[str] = []

    class Counting(Registry):
        def aliases(self, model: str) -> dict[str, str]:
            asked.append(model)
            if "*aliases*" in self.fail:
                raise self.fail["*aliases*"]
            return super().aliases(model)

    counting = Counting()
    for name in ("a", "b"):
        counting.add(name, "1", 10_000, Production="1")
    counting.add("live", "1", 10_000, Production="1")
    reconcile_once(settings, counting, queue, state)  # type: ignore[arg-type]
    # A delivered hook promoted a model no pass listed, deleted since.
    queue.enqueue(JobKey("hooked", "1", "production", "promote"))
    finish_jobs(queue)
    for name in ("a", "b"):
        del counting.model_ms[name]
    counting.versions = [v for v in counting.versions if v[0] == "live"]

    gone = reconcile_once(settings, counting, queue, state)  # type: ignore[arg-type]
    assert actions(gone) == [("a", "decommission"), ("b", "decommission"),
                             ("hooked", "decommission")]
    assert sorted(asked) == ["a", "b", "hooked"]
    finish_jobs(queue)
    asked.clear()
    counting.fail["*aliases*"] = TransientError("MLflow timed out")
    for _ in range(2):
        later = reconcile_once(settings, counting, queue, state)  # type: ignore[arg-type]
        assert asked == [] and later.failed == [] and later.jobs == []
