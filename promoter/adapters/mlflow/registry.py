"""The Registry port over MLflow: model versions, runs, signatures, deployment intent, aliases
and stages, and the ``promoter.<env>.*`` tags written back.

``MlflowRegistry`` is promoter's one MLflow adapter: besides the Registry port it is the
ModelSource the image builder downloads models through (``resolve_model``, ``checked_lineage``,
``download_model``) and it manages the webhook (``ensure_webhook``, ``webhooks``), all over one
``MlflowClient`` and one error translator (``promoter.adapters.mlflow.errors``).
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from promoter.adapters.mlflow.artifacts import Artifacts, registered_model_uri, run_model_uri
from promoter.adapters.mlflow.client import Connection, pages
from promoter.adapters.mlflow.hf_files import read_huggingface_files
from promoter.adapters.mlflow.webhooks import Webhooks
from promoter.core.lineage import run_of
from promoter.core.spec import deep_merge, intent_from_tags
from promoter.errors import PermanentError, UserError
from promoter.intent_yaml import MAX_INTENT_BYTES, load_intent_yaml
from promoter.ports.image import CheckedVersion, ModelLineage, model_version_uri
from promoter.ports.registry import (
    WRITE_BACK_FIELDS,
    HuggingFaceFiles,
    ModelVersionInfo,
    RegisteredModelInfo,
    RunInfo,
)

INTENT_FILE = "modeldeployment.yaml"
ACTIVE_STAGES = ("Staging", "Production")
PAGE = 1000


class MlflowRegistry:
    """``promoter.ports.registry.Registry`` (and ``ModelSource``) over ``mlflow.MlflowClient``.

    Build it through ``promoter.service.composition.registry``, which applies MLflow's client
    settings first and keeps one per process.
    """

    def __init__(self, tracking_uri: str | None, *,
                 artifact_roots: tuple[str, ...] | None = None) -> None:
        self._mlflow = Connection(tracking_uri)
        self._client = self._mlflow.client
        self.artifacts = Artifacts(self._mlflow, artifact_roots)
        self._webhooks = Webhooks(self._mlflow)

    @property
    def uri(self) -> str:
        return self._mlflow.uri

    @property
    def where(self) -> str:
        """The tracking URI without credentials, for logs and messages."""
        return self._mlflow.where

    # ------------------------------------------------------------------ reads
    def ping(self) -> None:
        self._mlflow.call("reach the registry", lambda: self._client.search_registered_models(
            max_results=1))

    def model_version(self, model: str, version: str) -> ModelVersionInfo:
        found = self._mlflow.call(f"read {model!r} version {version}",
                                  lambda: self._client.get_model_version(model, version))
        return _version_info(found)

    def run(self, run_id: str) -> RunInfo:
        found = self._mlflow.call(f"read run {run_id}", lambda: self._client.get_run(run_id))
        return RunInfo(run_id=run_id, metrics=dict(found.data.metrics),
                       params=dict(found.data.params), tags=dict(found.data.tags),
                       artifact_uri=found.info.artifact_uri or "")

    def logged_model_run_id(self, model_id: str) -> str | None:
        found = self._mlflow.call(f"read logged model {model_id}",
                                  lambda: self._client.get_logged_model(model_id))
        return str(found.source_run_id) if found.source_run_id else None

    def artifact_location(self, model: str, version: str) -> str:
        return str(self._mlflow.call(
            f"locate the files of {model!r} version {version}",
            lambda: self._client.get_model_version_download_uri(model, version)))

    def huggingface_files(self, model: str, version: str) -> HuggingFaceFiles:
        return read_huggingface_files(self.artifacts, self.artifact_location(model, version))

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        from mlflow.models import Model

        where = self.artifact_location(model, version).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="promoter-mlmodel-") as tmp:
            path = self.artifacts.download(f"{where}/MLmodel", tmp)
            loaded = self._mlflow.call(f"read the MLmodel of {model!r} version {version}",
                                       lambda: Model.load(path))
        return loaded.signature.to_dict() if loaded.signature is not None else None

    def intent(self, version: ModelVersionInfo) -> dict[str, Any]:
        """``deploy.*`` tags, then a logged ``modeldeployment.yaml`` merged over them."""
        try:
            from_tags = intent_from_tags(version.tags)
        except ValueError as exc:
            raise UserError(f"{version.model!r} version {version.version}: {exc}",
                            hint="fix the deploy.* tags on the model version") from None
        logged = self._logged_intent(version)
        return deep_merge(from_tags, logged) if logged else from_tags

    def aliases(self, model: str) -> dict[str, str]:
        found = self._mlflow.call(f"read registered model {model!r}",
                                  lambda: self._client.get_registered_model(model))
        return {str(alias): str(v) for alias, v in (found.aliases or {}).items()}

    def stage_versions(self, model: str) -> dict[str, str]:
        with warnings.catch_warnings():  # legacy stages are deprecated but still in use
            warnings.simplefilter("ignore")
            latest = self._mlflow.call(f"read the stages of {model!r}",
                                       lambda: self._client.get_latest_versions(model))
        return {mv.current_stage: str(mv.version) for mv in latest
                if mv.current_stage in ACTIVE_STAGES}

    def current_version(self, model: str, alias: str | None, stage: str | None) -> str | None:
        if alias:
            pointed = self.aliases(model).get(alias)
            if pointed:
                return pointed
        return self.stage_versions(model).get(stage) if stage else None

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._mlflow.call(f"point alias {alias!r} of {model!r} at version {version}",
                          functools.partial(self._client.set_registered_model_alias, model,
                                            alias, version))

    def live_version(self, model: str, env: str) -> str | None:
        found = self._mlflow.call(f"read registered model {model!r}",
                                  lambda: self._client.get_registered_model(model))
        value = (found.tags or {}).get(live_tag(env))
        return str(value) if value else None

    def set_live_version(self, model: str, env: str, version: str | None) -> None:
        if version is None:
            with contextlib.suppress(PermanentError):   # already absent: nothing to clear
                self._mlflow.call(f"clear {live_tag(env)} on {model!r}", functools.partial(
                    self._client.delete_registered_model_tag, model, live_tag(env)))
            return
        self._mlflow.call(f"tag {model!r} with {live_tag(env)}", functools.partial(
            self._client.set_registered_model_tag, model, live_tag(env), version))

    def models(self) -> Iterator[RegisteredModelInfo]:
        for found in pages(self._mlflow, "list registered models",
                           lambda token: self._client.search_registered_models(
                               max_results=PAGE, page_token=token)):
            yield RegisteredModelInfo(name=found.name, aliases={
                str(a): str(v) for a, v in (found.aliases or {}).items()},
                last_updated_ms=int(found.last_updated_timestamp or 0))

    def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
        # The SQL store cannot filter on last_updated_timestamp, but it can order by it, so
        # paging newest first and stopping at the cursor keeps the cost to the changed versions.
        for found in pages(self._mlflow, "search model versions",
                           lambda token: self._client.search_model_versions(
                               max_results=PAGE, page_token=token,
                               order_by=["last_updated_timestamp DESC"])):
            info = _version_info(found)
            if info.last_updated_ms < since_ms:
                return
            yield info

    # ------------------------------------------------------------------ writes
    def write_back(self, model: str, version: str, env: str, values: Mapping[str, str]) -> None:
        for field, value in values.items():
            if field not in WRITE_BACK_FIELDS:
                raise ValueError(f"unknown write-back field {field!r}")
            key = f"promoter.{env}.{field}"
            self._mlflow.call(f"tag {model!r} version {version} with {key}",
                              functools.partial(self._client.set_model_version_tag, model,
                                                version, key, value))

    # ------------------------------------------------------------------ model files
    def resolve_model(self, uri: str) -> ModelLineage:
        """A model URI's lineage for ``promoter image build``: a registered version is read
        once, and its run is named only when the version's files come from it
        (core.lineage.run_of: the registrant may name any run), as the pipeline decides it."""
        if (registered := registered_model_uri(uri)) is not None:
            info = self._version_of(*registered)
            trusted = run_of(self, info).run
            return self._registered_lineage(uri, info.model, info.version, info.source,
                                            trusted.run_id if trusted else None)
        if (run_id := run_model_uri(uri)) is not None:
            return ModelLineage(source=uri, run_id=run_id)
        raise UserError(f"{uri!r} is not a model URI promoter understands",
                        hint="use models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH")

    def checked_lineage(self, version: CheckedVersion) -> ModelLineage:
        return self._registered_lineage(model_version_uri(version.model, version.version),
                                        version.model, version.version, version.source,
                                        version.run_id)

    def _registered_lineage(self, uri: str, model: str, version: str, source: str,
                            run_id: str | None) -> ModelLineage:
        # A registered version's files do not change, so its source names its content.
        return ModelLineage(source=uri, name=model, version=version, run_id=run_id,
                            content_id=f"{self._mlflow.where}|{source}")

    def _version_of(self, model: str, alias: str | None,
                    number: str | None) -> ModelVersionInfo:
        if number is not None:
            return self.model_version(model, number)
        found = self._mlflow.call(f"read {model!r}@{alias}",
                                  lambda: self._client.get_model_version_by_alias(model, alias))
        return _version_info(found)

    def download_model(self, uri: str, destination: Path) -> Path:
        return self.artifacts.download_model(uri, destination)

    # ------------------------------------------------------------------ webhooks
    def ensure_webhook(self, name: str, url: str, events: list[str],
                       secret: str) -> tuple[str, bool]:
        """Create the webhook, or update the one with this name or URL. → (id, created)."""
        return self._webhooks.ensure(name, url, events, secret)

    def webhooks(self) -> list[dict[str, Any]]:
        return self._webhooks.list()

    # ------------------------------------------------------------------ internals
    def _logged_intent(self, version: ModelVersionInfo) -> dict[str, Any]:
        """The intent file logged next to the model (or at the run's root), if any.

        Listed before downloading: a download of a missing file over the artifact proxy fails
        as a generic error that cannot be told apart from a real outage.
        """
        candidates = [self.artifact_location(version.model, version.version).rstrip("/")]
        if version.run_id:
            candidates.append(self.run(version.run_id).artifact_uri.rstrip("/"))
        with tempfile.TemporaryDirectory(prefix="promoter-intent-") as tmp:
            for directory in candidates:
                if INTENT_FILE in self.artifacts.listing(directory):
                    return _read_intent(Path(self.artifacts.download(
                        f"{directory}/{INTENT_FILE}", tmp)), version)
        return {}


def _version_info(found: Any) -> ModelVersionInfo:
    stage = found.current_stage if found.current_stage not in (None, "", "None") else None
    return ModelVersionInfo(model=found.name, version=str(found.version),
                            source=found.source or "", run_id=found.run_id or None, stage=stage,
                            tags=dict(found.tags or {}), description=found.description or "",
                            last_updated_ms=int(found.last_updated_timestamp or 0))


def _read_intent(path: Path, version: ModelVersionInfo) -> dict[str, Any]:
    """The logged file through the one bounded intent reader (promoter.intent_yaml): a model
    owner wrote it, so an alias bomb or a huge document is refused in milliseconds."""
    where = f"{INTENT_FILE} logged with {version.model!r} version {version.version}"
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_INTENT_BYTES + 1)
    except OSError as exc:
        raise PermanentError(f"{where} cannot be read: {exc.strerror or exc}") from None
    data = load_intent_yaml(text, origin=where)   # UserError: an invalid intent
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{where} must hold a mapping (a ModelDeployment document)")
    return data


def live_tag(env: str) -> str:
    """The registered-model tag naming the version live in ``env`` (MLflow shows it)."""
    return f"promoter.{env}.live_version"
