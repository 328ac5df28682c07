"""A registry double for the reconcile pass: what MLflow lists, and failures to answer with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from promoter.errors import NotFoundError
from promoter.ports.registry import ModelVersionInfo, RegisteredModelInfo
from promoter.service.queue import JobQueue


@dataclass
class Registry:
    """Models with aliases and stages; ``versions`` are (model, version, updated ms)."""

    model_aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    stages: dict[str, dict[str, str]] = field(default_factory=dict)
    model_ms: dict[str, int] = field(default_factory=dict)
    versions: list[tuple[str, str, int]] = field(default_factory=list)
    # model → the error its stage lookup answers; "*listing*" → the listing's.
    fail: dict[str, Exception] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def add(self, model: str, version: str, when: int, **stages: str) -> None:
        """A version of ``model`` changed at ``when`` (its registered model too)."""
        self.versions.append((model, version, when))
        self.model_ms[model] = max(when, self.model_ms.get(model, 0))
        self.stages.setdefault(model, {}).update(stages)

    def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
        if "*listing*" in self.fail:
            raise self.fail["*listing*"]
        for model, version, when in sorted(self.versions, key=lambda found: -found[2]):
            if when < since_ms:
                return
            yield ModelVersionInfo(model, version, "s3://models/x", None, None,
                                   last_updated_ms=when)

    def models(self) -> Iterator[RegisteredModelInfo]:
        for name in sorted(self.model_ms):
            yield RegisteredModelInfo(name, dict(self.model_aliases.get(name, {})),
                                      last_updated_ms=self.model_ms[name])

    def stage_versions(self, model: str) -> dict[str, str]:
        self.lookups.append(model)
        if model in self.fail:
            raise self.fail[model]
        return dict(self.stages.get(model, {}))

    def aliases(self, model: str) -> dict[str, str]:
        if model not in self.model_ms:
            raise NotFoundError(f"registered model {model!r} does not exist")
        return dict(self.model_aliases.get(model, {}))


def finish_jobs(queue: JobQueue) -> None:
    """Every queued job done, as a worker would leave them."""
    while (job := queue.claim("worker")) is not None:
        queue.complete(job.id, "worker", {})
