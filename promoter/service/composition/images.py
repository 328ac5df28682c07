"""Image building wired to its adapters: OCI registry clients, the MLflow model source, pip."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

from promoter.image.builder import BuildProgress
from promoter.ports.image import BuiltImage, ImageRegistry, RegistryClients, is_model_uri
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

    # A local model directory needs no MLflow: do not build (or import) its client for one.
    models = adapter(settings) if is_model_uri(model) and settings.mlflow.tracking_uri else None
    return build_model_image(settings, model, repository, models=models,
                             clients=registry_clients(settings), installer=PipInstaller(),
                             base=base, labels=labels, tag=tag, layout=layout,
                             progress=progress)


class ModelImages:
    """The pipeline's image port: a registered model version → its pushed serving image."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, model: str, version: str, repository: str,
              labels: Mapping[str, str]) -> BuiltImage:
        return build_image(self.settings, f"models:/{model}/{version}", repository,
                           labels=labels, layout=self.settings.image.oci_layout)
