"""The MLflow Model Registry adapter: the only promoter module that imports mlflow.

It reads model versions, runs, signatures and deployment intent, writes ``promoter.<env>.*``
tags back, manages the MLflow webhook, and turns MLflow's exceptions into promoter errors:
unreachable / 5xx / timeouts → ``TransientError``; 4xx such as RESOURCE_DOES_NOT_EXIST →
``PermanentError``. MLflow's HTTP client retries for minutes by default; promoter lowers that
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_TIMEOUT``, unless already set) so a down registry fails
fast and the job queue's own backoff takes over.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter.core.spec import deep_merge, intent_from_tags
from promoter.errors import PermanentError, PromoterError, TransientError, UserError
from promoter.ports.registry import (
    WRITE_BACK_FIELDS,
    ModelVersionInfo,
    RegisteredModelInfo,
    RunInfo,
)

T = TypeVar("T")
FAST_FAIL_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
INTENT_FILE = "modeldeployment.yaml"
ACTIVE_STAGES = ("Staging", "Production")
PAGE = 1000


def redact_uri(uri: str) -> str:
    """A tracking URI without user:password, safe for messages and logs."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


class MlflowRegistry:
    """``promoter.ports.registry.Registry`` over ``mlflow.MlflowClient``."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        for variable, value in FAST_FAIL_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        from mlflow import MlflowClient

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise UserError("no MLflow tracking URI is configured",
                            hint="set MLFLOW_TRACKING_URI or mlflow.tracking_uri in promoter.yaml")
        self.uri = uri
        self._where = redact_uri(uri)
        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    @property
    def where(self) -> str:
        """The tracking URI without credentials, for logs and messages."""
        return self._where

    # ------------------------------------------------------------------ reads
    def ping(self) -> None:
        self._call("reach the registry", lambda: self._client.search_registered_models(
            max_results=1))

    def model_version(self, model: str, version: str) -> ModelVersionInfo:
        found = self._call(f"read {model!r} version {version}",
                           lambda: self._client.get_model_version(model, version))
        return _version_info(found)

    def run(self, run_id: str) -> RunInfo:
        found = self._call(f"read run {run_id}", lambda: self._client.get_run(run_id))
        return RunInfo(run_id=run_id, metrics=dict(found.data.metrics),
                       params=dict(found.data.params), tags=dict(found.data.tags),
                       artifact_uri=found.info.artifact_uri or "")

    def artifact_location(self, model: str, version: str) -> str:
        return str(self._call(f"locate the files of {model!r} version {version}",
                              lambda: self._client.get_model_version_download_uri(model, version)))

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        from mlflow.models import Model

        where = self.artifact_location(model, version).rstrip("/")
        with tempfile.TemporaryDirectory(prefix="promoter-mlmodel-") as tmp:
            path = self._download(f"{where}/MLmodel", tmp)
            loaded = self._call(f"read the MLmodel of {model!r} version {version}",
                                lambda: Model.load(path))
        return loaded.signature.to_dict() if loaded.signature is not None else None

    def intent(self, version: ModelVersionInfo) -> dict[str, Any]:
        """``deploy.*`` tags, then a logged ``modeldeployment.yaml`` merged over them."""
        try:
            from_tags = intent_from_tags(version.tags)
        except ValueError as exc:
            raise PermanentError(f"{version.model!r} version {version.version}: {exc}",
                                 hint="fix the deploy.* tags on the model version") from None
        logged = self._logged_intent(version)
        return deep_merge(from_tags, logged) if logged else from_tags

    def aliases(self, model: str) -> dict[str, str]:
        found = self._call(f"read registered model {model!r}",
                           lambda: self._client.get_registered_model(model))
        return {str(alias): str(v) for alias, v in (found.aliases or {}).items()}

    def stage_versions(self, model: str) -> dict[str, str]:
        with warnings.catch_warnings():  # legacy stages are deprecated but still in use
            warnings.simplefilter("ignore")
            latest = self._call(f"read the stages of {model!r}",
                                lambda: self._client.get_latest_versions(model))
        return {mv.current_stage: str(mv.version) for mv in latest
                if mv.current_stage in ACTIVE_STAGES}

    def current_version(self, model: str, alias: str | None, stage: str | None) -> str | None:
        if alias:
            pointed = self.aliases(model).get(alias)
            if pointed:
                return pointed
        return self.stage_versions(model).get(stage) if stage else None

    def models(self) -> Iterator[RegisteredModelInfo]:
        for found in self._pages("list registered models",
                                 lambda token: self._client.search_registered_models(
                                     max_results=PAGE, page_token=token)):
            yield RegisteredModelInfo(name=found.name, aliases={
                str(a): str(v) for a, v in (found.aliases or {}).items()},
                last_updated_ms=int(found.last_updated_timestamp or 0))

    def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
        # The SQL store cannot filter on last_updated_timestamp, but it can order by it, so
        # paging newest first and stopping at the cursor keeps the cost to the changed versions.
        for found in self._pages("search model versions",
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
            self._call(f"tag {model!r} version {version} with {key}",
                       functools.partial(self._client.set_model_version_tag, model, version,
                                         key, value))

    # ------------------------------------------------------------------ webhooks
    def ensure_webhook(self, name: str, url: str, events: list[str],
                       secret: str) -> tuple[str, bool]:
        """Create the webhook, or update the one with this name or URL. → (id, created)."""
        wanted: list[Any] = list(events)  # mlflow types these as a Literal of its event names
        existing = [hook for hook in self.webhooks() if hook["name"] == name or hook["url"] == url]
        if existing:
            hook_id = existing[0]["id"]
            self._call("update the MLflow webhook", lambda: self._client.update_webhook(
                hook_id, name=name, url=url, events=wanted, secret=secret, status="ACTIVE"))
            return hook_id, False
        created = self._call("create the MLflow webhook", lambda: self._client.create_webhook(
            name=name, url=url, events=wanted, secret=secret))
        return str(created.webhook_id), True

    def webhooks(self) -> list[dict[str, Any]]:
        return [{"id": str(hook.webhook_id), "name": hook.name, "url": hook.url,
                 "events": sorted(str(event) for event in hook.events),
                 "status": str(hook.status)}
                for hook in self._pages("list MLflow webhooks",
                                        lambda token: self._client.list_webhooks(
                                            max_results=100, page_token=token))]

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
                if INTENT_FILE in self._listing(directory):
                    return _read_intent(Path(self._download(f"{directory}/{INTENT_FILE}", tmp)),
                                        version)
        return {}

    def _listing(self, directory: str) -> set[str]:
        from mlflow.artifacts import list_artifacts

        found = self._call(f"list {directory}", lambda: list_artifacts(
            artifact_uri=directory, tracking_uri=self.uri))
        return {PurePosixPath(entry.path).name for entry in found or [] if not entry.is_dir}

    def _download(self, artifact_uri: str, into: str) -> str:
        from mlflow.artifacts import download_artifacts

        return self._call(f"download {artifact_uri}", lambda: str(download_artifacts(
            artifact_uri=artifact_uri, dst_path=into, tracking_uri=self.uri)))

    def _pages(self, doing: str, fetch: Callable[[str | None], Any]) -> Iterator[Any]:
        token: str | None = None
        for _ in range(100_000):  # bounded: a registry of 100M entries is not expected
            page = self._call(doing, functools.partial(fetch, token))
            yield from page
            token = page.token
            if not token:
                return

    def _call(self, doing: str, action: Callable[[], T]) -> T:
        from mlflow.exceptions import MlflowException

        try:
            return action()
        except PromoterError:
            raise
        except MlflowException as exc:
            raise _translate(exc, doing, self._where) from None
        except FileNotFoundError:
            raise PermanentError(f"cannot {doing}: no such file in the registry's artifacts") \
                from None
        except (OSError, TimeoutError) as exc:
            raise TransientError(f"cannot {doing}: MLflow at {self._where} is unreachable "
                                 f"({type(exc).__name__})",
                                 hint="check MLFLOW_TRACKING_URI and that MLflow is up") from None


_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
_UNREACHABLE_SIGNS = ("Max retries exceeded", "Failed to establish a new connection",
                      "Connection refused", "Read timed out", "Connection aborted")


def _translate(exc: Any, doing: str, where: str) -> PromoterError:
    status = int(exc.get_http_status_code())
    code = str(getattr(exc, "error_code", ""))
    detail = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0][:300]
    if any(sign in detail for sign in _UNREACHABLE_SIGNS):  # the client's own connection errors
        return TransientError(f"cannot {doing}: MLflow at {where} is unreachable",
                              hint="check MLFLOW_TRACKING_URI and that the MLflow server runs")
    if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
        return TransientError(f"cannot {doing}: MLflow at {where} failed ({code}): {detail}",
                              hint="promoter retries; check that MLflow is up if this persists")
    return PermanentError(f"cannot {doing}: MLflow answered {code or status}: {detail}",
                          hint="check the model name and version in MLflow")


def _version_info(found: Any) -> ModelVersionInfo:
    stage = found.current_stage if found.current_stage not in (None, "", "None") else None
    return ModelVersionInfo(model=found.name, version=str(found.version),
                            source=found.source or "", run_id=found.run_id or None, stage=stage,
                            tags=dict(found.tags or {}), description=found.description or "",
                            last_updated_ms=int(found.last_updated_timestamp or 0))


def _read_intent(path: Path, version: ModelVersionInfo) -> dict[str, Any]:
    where = f"{INTENT_FILE} logged with {version.model!r} version {version.version}"
    try:
        with contextlib.closing(path.open(encoding="utf-8")) as handle:
            data = YAML(typ="safe", pure=True).load(handle)
    except (OSError, UnicodeDecodeError, YAMLError) as exc:
        raise PermanentError(f"{where} cannot be read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PermanentError(f"{where} must hold a mapping (a ModelDeployment document)")
    return data
