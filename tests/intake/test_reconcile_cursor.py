"""The reconcile pass's version cursor never passes a change it has not read (a registry
double whose listing changes mid-pass, as a busy MLflow's does)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from promoter.ports.registry import RegisteredModelInfo
from promoter.service.queue import JobQueue
from promoter.service.reconcile import ReconcileState, reconcile_once
from tests.intake.conftest import make_settings
from tests.intake.registry_double import Registry


@dataclass
class ChangingRegistry(Registry):
    """Two models in Production by stage; ``during`` runs right after ``alpha`` is listed."""

    during: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.add("alpha", "1", 10_000, Production="1")
        self.add("zeta", "1", 10_000, Production="1")

    def models(self) -> Iterator[RegisteredModelInfo]:
        for found in super().models():
            yield found
            if found.name == "alpha" and self.during is not None:
                self.during()
                self.during = None


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
