"""The reconcile pass's version cursor never passes a change it has not read (a registry
double whose listing changes mid-pass, as a busy MLflow's does)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from promoter.ports.registry import ModelVersionInfo, RegisteredModelInfo
from promoter.service.queue import JobQueue
from promoter.service.reconcile import ReconcileState, reconcile_once
from tests.intake.conftest import make_settings


class ChangingRegistry:
    """Two models in Production by stage; ``during`` runs right after ``alpha`` is listed."""

    def __init__(self) -> None:
        self.stages = {"alpha": {"Production": "1"}, "zeta": {"Production": "1"}}
        self.model_ms = {"alpha": 10_000, "zeta": 10_000}
        self.versions = [("alpha", "1", 10_000), ("zeta", "1", 10_000)]
        self.during: Callable[[], None] | None = None

    def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
        for model, version, when in sorted(self.versions, key=lambda found: -found[2]):
            if when < since_ms:
                return
            yield ModelVersionInfo(model, version, "s3://models/x", None, None,
                                   last_updated_ms=when)

    def models(self) -> Iterator[RegisteredModelInfo]:
        for name in sorted(self.model_ms):
            yield RegisteredModelInfo(name, {}, last_updated_ms=self.model_ms[name])
            if name == "alpha" and self.during is not None:
                self.during()
                self.during = None

    def stage_versions(self, model: str) -> dict[str, str]:
        return dict(self.stages[model])


def test_a_stage_change_made_mid_pass_is_found_by_a_later_pass(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    registry = ChangingRegistry()
    queue, state = JobQueue.open(settings.state_dir), ReconcileState(settings.state_dir)

    def mid_pass() -> None:
        # alpha's version 2 enters Production after alpha was listed; later, zeta changes.
        registry.versions.append(("alpha", "2", 20_000))
        registry.stages["alpha"]["Production"] = "2"
        registry.model_ms["alpha"] = 20_000
        registry.versions.append(("zeta", "2", 30_000))
        registry.model_ms["zeta"] = 30_000

    try:
        reconcile_once(settings, registry, queue, state)   # type: ignore[arg-type]
        registry.during = mid_pass
        reconcile_once(settings, registry, queue, state)   # type: ignore[arg-type]
        promoted = [(job["model"], job["version"])
                    for _ in range(2)
                    for job in reconcile_once(settings, registry, queue,  # type: ignore[arg-type]
                                              state).jobs]
        assert ("alpha", "2") in promoted
        assert state.observed()["alpha"]["production"].stage_version == "2"
    finally:
        state.close()
        queue.close()
