"""Image building wired to its adapters: OCI registry clients, the MLflow model source, pip."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

from promoter.image.builder import BuildProgress
from promoter.ports.image import (
    BuiltImage,
    ImageRegistry,
    ModelcarRequest,
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


def build_image(settings: Settings, model: str, repository: str | None, *,
                base: str | None = None, labels: Mapping[str, str] | None = None,
                tag: str | None = None, layout: Path | None = None,
                progress: BuildProgress | None = None) -> BuiltImage:
    """`promoter image build` and the pipeline's image step (``progress``: a terminal's
    callbacks, see promoter.progress)."""
    from promoter.adapters.pip import PipInstaller
    from promoter.image.service import build_model_image
    from promoter.service.composition.mlflow import adapter
    from promoter.state.db import ensure_state_dir

    ensure_state_dir(settings.state_dir)  # its image cache must not create it world-readable

    # A local model directory needs no MLflow: do not build (or import) its client for one.
    models = adapter(settings) if is_model_uri(model) and settings.mlflow.tracking_uri else None
    return build_model_image(settings, model, repository, models=models,
                             clients=registry_clients(settings),
                             installer=PipInstaller(settings.secret_values()),
                             base=base, labels=labels, tag=tag, layout=layout,
                             progress=progress)


def build_modelcar(settings: Settings, model: str, repository: str, request: ModelcarRequest,
                   *, labels: Mapping[str, str] | None = None,
                   layout: Path | None = None) -> BuiltImage:
    """The pipeline's modelcar step: an MLflow model URI or directory → a pushed modelcar."""
    from promoter.image.modelcar_service import build_modelcar_image
    from promoter.service.composition.mlflow import adapter
    from promoter.state.db import ensure_state_dir

    ensure_state_dir(settings.state_dir)  # its image cache must not create it world-readable
    models = adapter(settings) if is_model_uri(model) and settings.mlflow.tracking_uri else None
    return build_modelcar_image(settings.image, settings.state_dir, model, repository, request,
                                models=models, clients=registry_clients(settings),
                                labels=labels, layout=layout)


class ModelImages:
    """The pipeline's image port: a registered model version → its pushed serving image or
    modelcar."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, model: str, version: str, repository: str,
              labels: Mapping[str, str]) -> BuiltImage:
        return build_image(self.settings, f"models:/{model}/{version}", repository,
                           labels=labels, layout=self.settings.image.oci_layout)

    def build_modelcar(self, model: str, version: str, repository: str,
                       request: ModelcarRequest, labels: Mapping[str, str]) -> BuiltImage:
        return build_modelcar(self.settings, f"models:/{model}/{version}", repository, request,
                              labels=labels, layout=self.settings.image.oci_layout)
