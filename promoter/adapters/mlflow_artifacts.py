"""Fetch an MLflow model (``models:/name/7``, ``models:/name@alias``, ``runs:/id/path``, or a
local directory) to disk, with its lineage (name, version, run id) for the image labels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from promoter.adapters.mlflow_registry import FAST_FAIL_DEFAULTS, redact_uri
from promoter.errors import PermanentError, TransientError, UserError
from promoter.ports.image import ModelLineage

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
_RUNS_URI = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z]+)/.+$")


def is_model_uri(text: str) -> bool:
    return text.startswith(("models:/", "runs:/"))


def _tracking(uri: str, tracking_uri: str | None) -> str:
    for variable, value in FAST_FAIL_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    found = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not found:
        raise UserError("no MLflow tracking URI is configured to resolve " + uri,
                        hint="set MLFLOW_TRACKING_URI or mlflow.tracking_uri in promoter.yaml")
    return found


def resolve_model(uri: str, tracking_uri: str | None) -> ModelLineage:
    """Where the model comes from, without downloading it."""
    if not is_model_uri(uri):
        path = Path(uri)
        if not path.is_dir():
            raise UserError(f"{uri!r} is neither an MLflow model URI nor a directory",
                            hint="pass models:/NAME/VERSION, runs:/RUN_ID/PATH or a local "
                                 "model directory")
        from promoter.image.lineage import read_run_id

        return ModelLineage(source=uri, name=None, run_id=read_run_id(path))
    return _lineage(uri, _tracking(uri, tracking_uri))


def download_model(uri: str, destination: Path, tracking_uri: str | None) -> Path:
    """The model's directory: downloaded under ``destination``, or a local one as it is."""
    if not is_model_uri(uri):
        return Path(uri)
    uri_tracking = _tracking(uri, tracking_uri)
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    destination.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=_download_uri(uri, uri_tracking), dst_path=str(destination),
            tracking_uri=uri_tracking)
    except MlflowException as exc:
        raise _translated(exc, uri, uri_tracking) from None
    except OSError as exc:
        raise TransientError(f"cannot download {uri} from {redact_uri(uri_tracking)}: "
                             f"{type(exc).__name__}") from None
    return Path(local)


def _download_uri(uri: str, tracking_uri: str) -> str:
    """Where a models:/ URI's files are, asked of the configured registry. MLflow resolves
    models:/ inside download_artifacts with the process-wide registry URI instead of the one
    passed in, so a process configured only through promoter.yaml would look elsewhere."""
    found = _MODELS_URI.match(uri)
    if found is None:
        return uri
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = found["version"] or str(
        client.get_model_version_by_alias(found["name"], found["alias"]).version)
    return str(client.get_model_version_download_uri(found["name"], version))


def _lineage(uri: str, tracking_uri: str) -> ModelLineage:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if found := _MODELS_URI.match(uri):
            name = found["name"]
            version = (client.get_model_version_by_alias(name, found["alias"])
                       if found["alias"] else client.get_model_version(name, found["version"]))
            # A registered version's files do not change, so its source names its content.
            return ModelLineage(source=uri, name=name, version=str(version.version),
                                run_id=version.run_id or None,
                                content_id=f"{redact_uri(tracking_uri)}|{version.source}")
        if found := _RUNS_URI.match(uri):
            return ModelLineage(source=uri, run_id=found["run"])
    except MlflowException as exc:
        raise _translated(exc, uri, tracking_uri) from None
    raise UserError(f"{uri!r} is not a model URI promoter understands",
                    hint="use models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH")


def _translated(exc: Exception, uri: str, tracking_uri: str) -> Exception:
    status = getattr(exc, "get_http_status_code", lambda: 500)()
    detail = str(getattr(exc, "message", exc)).splitlines()[0][:300]
    if int(status) >= 500:
        return TransientError(f"MLflow at {redact_uri(tracking_uri)} failed while resolving "
                              f"{uri}: {detail}", hint="check that MLflow is up")
    return PermanentError(f"cannot resolve {uri}: {detail}",
                          hint="check the model name and version (or alias) in MLflow")
