"""The model registry port: what promoter reads from and writes back to MLflow.

Implemented by ``promoter.adapters.mlflow.MlflowRegistry``. Every method raises only
promoter errors: ``TransientError`` when the registry is unreachable or answers 5xx (the job is
retried), ``AuthError`` when the credentials are refused, ``NotFoundError`` (a
``PermanentError``) when the registry says the thing asked for does not exist, and
``PermanentError`` when the request is otherwise refused (a wrong path in the registry's URI
included: that says nothing about whether the model exists).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Tags written back on the model version, one set per environment: promoter.<env>.<field>.
WRITE_BACK_FIELDS = ("status", "mr_url", "image", "reason", "sync", "health", "revision",
                     "synced_at")


@dataclass(frozen=True)
class ModelVersionInfo:
    model: str
    version: str
    source: str
    run_id: str | None
    stage: str | None  # legacy stage; None for "None"
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    last_updated_ms: int = 0

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "source": self.source,
                "run_id": self.run_id, "stage": self.stage, "tags": dict(self.tags),
                "description": self.description, "last_updated_ms": self.last_updated_ms}


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    artifact_uri: str = ""

    @property
    def git_commit(self) -> str | None:
        return self.tags.get("mlflow.source.git.commit")

    def describe(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "metrics": dict(self.metrics), "params": dict(self.params),
                "tags": {k: v for k, v in self.tags.items()
                         if not k.startswith("mlflow.log-model")},
                "artifact_uri": self.artifact_uri, "git_commit": self.git_commit}


@dataclass(frozen=True)
class HuggingFaceFiles:
    """What a vLLM server reads first from a version's Hugging Face directory: the flat
    directory the modelcar would hold (``promoter.core.hf_directory``)."""

    names: frozenset[str] = frozenset()   # file names in the directory
    # config.json parsed; None when it is missing, over the size limit, or not a JSON object.
    config: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RegisteredModelInfo:
    name: str
    aliases: Mapping[str, str]  # alias → version
    last_updated_ms: int = 0


class Registry(Protocol):
    def ping(self) -> None:
        """TransientError unless the registry answers."""

    def model_version(self, model: str, version: str) -> ModelVersionInfo: ...

    def run(self, run_id: str) -> RunInfo: ...

    def logged_model_run_id(self, model_id: str) -> str | None:
        """The run an MLflow 3 logged model (``models:/m-<id>``) was logged in, or None."""

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        """The logged model signature ({"inputs": ..., "outputs": ...}) or None."""

    def artifact_location(self, model: str, version: str) -> str:
        """Where the model's files can be downloaded from."""

    def huggingface_files(self, model: str, version: str) -> HuggingFaceFiles:
        """The names in the version's Hugging Face directory and its config.json, read
        without downloading the weights."""

    def intent(self, version: ModelVersionInfo) -> dict[str, Any]:
        """Partial ModelDeployment from ``deploy.*`` tags and a logged ``modeldeployment.yaml``."""

    def aliases(self, model: str) -> dict[str, str]:
        """alias → version, read from the registered model (complete on every backend)."""

    def stage_versions(self, model: str) -> dict[str, str]:
        """Legacy stage → the newest version in it (Staging, Production; not None/Archived)."""

    def current_version(self, model: str, alias: str | None, stage: str | None) -> str | None:
        """What an environment's trigger points at now: the alias if set, else the stage."""

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (a rollback moves the environment's alias)."""

    def live_version(self, model: str, env: str) -> str | None:
        """``promoter.<env>.live_version`` on the registered model: what runs there now."""

    def set_live_version(self, model: str, env: str, version: str | None) -> None:
        """Record (or, with None, clear) what runs in ``env`` on the registered model."""

    def write_back(self, model: str, version: str, env: str, values: Mapping[str, str]) -> None:
        """Set ``promoter.<env>.<field>`` tags on the version (fields in WRITE_BACK_FIELDS)."""

    def models(self) -> Iterator[RegisteredModelInfo]:
        """Every registered model with its aliases, paged."""

    def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
        """Versions whose last update is at or after ``since_ms``, newest first, paged."""


class WebhookAdmin(Protocol):
    """The registry's webhooks (`promoter hooks register|list`, the demo)."""

    def ensure_webhook(self, name: str, url: str, events: list[str],
                       secret: str) -> tuple[str, bool]:
        """Create the webhook, or update the one with this name or URL. → (id, created)."""

    def webhooks(self) -> list[dict[str, Any]]: ...
