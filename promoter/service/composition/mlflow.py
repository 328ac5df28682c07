"""The one MLflow adapter of this process, configured once.

MLflow's HTTP client reads its retry count and timeout only from environment variables, at
every request. Setting them here, once, before the first client exists, keeps that process-wide
side effect in the composition root: the adapter itself never touches ``os.environ``, and a
value the operator exported wins over promoter's defaults. The tracking URI comes from the
settings (promoter.yaml, overridden by ``MLFLOW_TRACKING_URI``) and is handed to the client
explicitly, so MLflow's global tracking URI is never consulted.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from promoter.errors import UserError
from promoter.settings import Settings

if TYPE_CHECKING:
    from promoter.adapters.mlflow import MlflowRegistry

_lock = threading.Lock()
_adapters: dict[tuple[str, tuple[str, ...] | None], MlflowRegistry] = {}


def adapter(settings: Settings) -> MlflowRegistry:
    """The process's MLflow adapter for ``settings.mlflow.tracking_uri`` (built on first use)."""
    uri = settings.mlflow.tracking_uri
    if not uri:
        raise UserError("no MLflow tracking URI is configured",
                        hint="set MLFLOW_TRACKING_URI or mlflow.tracking_uri in promoter.yaml")
    roots = settings.mlflow.artifact_roots
    with _lock:
        found = _adapters.get((uri, roots))
        if found is None:
            from promoter.adapters.mlflow import MlflowRegistry

            apply_client_settings()
            found = _adapters[(uri, roots)] = MlflowRegistry(uri, artifact_roots=roots)
        return found


def apply_client_settings() -> None:
    """MLflow's process-wide settings (adapters.mlflow.CLIENT_SETTINGS) as environment defaults:
    before the first client, and before a child process (the demo's `mlflow server`) inherits
    the environment. An exported value wins."""
    from promoter.adapters.mlflow import CLIENT_SETTINGS

    for variable, value in CLIENT_SETTINGS.items():
        os.environ.setdefault(variable, value)
