"""The pipeline's image port over the daemonless builder and MLflow model downloads."""

from __future__ import annotations

from collections.abc import Mapping

from promoter.image.service import build_model_image
from promoter.ports.image import BuiltImage
from promoter.settings import Settings


class RegistryModelImages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, model: str, version: str, repository: str,
              labels: Mapping[str, str]) -> BuiltImage:
        return build_model_image(self.settings, f"models:/{model}/{version}", repository,
                                 labels=labels, layout=self.settings.image.oci_layout)
