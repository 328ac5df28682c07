"""Image building wired to its adapters: OCI registry clients, the MLflow model source, pip."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

from promoter.image.builder import BuildProgress
from promoter.ports.image import (
    BuiltImage,
    CheckedVersion,
    ImageRegistry,
    ModelcarRequest,
    ModelSource,
    RegistryClients,
    is_model_uri,
)
from promoter.settings import Settings


def registry_clients(settings: Settings) -> RegistryClients:
    """registry host → an OCI distribution client (auth file, insecure registries from
    ``image.*``), closed when the caller's ``with`` ends."""
    from promoter.adapters.oci import client_for

    def open_client(registry: str) -> AbstractContextManager[ImageRegistry]:
        return client_for(registry, settings.image)

    return open_client


def build_image(settings: Settings, model: str | CheckedVersion, repository: str | None, *,
                base: str | None = None, labels: Mapping[str, str] | None = None,
                tag: str | None = None, layout: Path | None = None,
                progress: BuildProgress | None = None) -> BuiltImage:
    """`promoter image build` and the pipeline's image step (``progress``: a terminal's
    callbacks, see promoter.progress)."""
    from promoter.adapters.pip import PipInstaller
    from promoter.image.service import build_model_image
    from promoter.state.db import ensure_state_dir

    ensure_state_dir(settings.state_dir)  # its image cache must not create it world-readable

    return build_model_image(settings, model, repository, models=_model_source(settings, model),
                             clients=registry_clients(settings),
                             installer=PipInstaller(settings.secret_values()),
                             base=base, labels=labels, tag=tag, layout=layout,
                             progress=progress)


def build_modelcar(settings: Settings, model: str | CheckedVersion, repository: str,
                   request: ModelcarRequest, *, labels: Mapping[str, str] | None = None,
                   layout: Path | None = None) -> BuiltImage:
    """The pipeline's modelcar step: an MLflow model URI or directory, or a version the
    pipeline checked → a pushed modelcar."""
    from promoter.image.modelcar_service import build_modelcar_image
    from promoter.state.db import ensure_state_dir

    ensure_state_dir(settings.state_dir)  # its image cache must not create it world-readable
    return build_modelcar_image(settings.image, settings.state_dir, model, repository, request,
                                models=_model_source(settings, model),
                                clients=registry_clients(settings), labels=labels, layout=layout)


def _model_source(settings: Settings, model: str | CheckedVersion) -> ModelSource | None:
    """The MLflow adapter, when ``model`` is in MLflow and a tracking URI is configured: a
    local model directory needs no MLflow, so its client is not built (or imported)."""
    from promoter.service.composition.mlflow import adapter

    in_mlflow = isinstance(model, CheckedVersion) or is_model_uri(model)
    return adapter(settings) if in_mlflow and settings.mlflow.tracking_uri else None


class ModelImages:
    """The pipeline's image port: a registered model version, as the pipeline checked it →
    its pushed serving image or modelcar."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, version: CheckedVersion, repository: str,
              labels: Mapping[str, str]) -> BuiltImage:
        return build_image(self.settings, version, repository, labels=labels,
                           layout=self.settings.image.oci_layout)

    def build_modelcar(self, version: CheckedVersion, repository: str,
                       request: ModelcarRequest, labels: Mapping[str, str]) -> BuiltImage:
        return build_modelcar(self.settings, version, repository, request, labels=labels,
                              layout=self.settings.image.oci_layout)
