"""What an image is built from: the model's lineage (labels, reuse) and where its files are.

One function for every builder (serving image, modelcar) and every caller: the pipeline hands
over the version it checked (``CheckedVersion``: nothing is asked of MLflow but the files), while
``promoter image build`` gives a model URI, resolved here through the ModelSource once, or a
local model directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from promoter.errors import UserError
from promoter.image.lineage import read_run_id
from promoter.ports.image import (
    CheckedVersion,
    ModelLineage,
    ModelSource,
    is_model_uri,
    model_version_uri,
)


@dataclass(frozen=True)
class ModelInput:
    lineage: ModelLineage
    files: str  # a model URI or MLflow files location to download, or a local directory
    models: ModelSource | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """What the user named: the model URI or directory."""
        return self.lineage.source

    def directory(self, scratch: Path) -> Path:
        """The model's files on disk: downloaded into ``scratch`` when they are in MLflow."""
        if self.models is None:
            return Path(self.files)
        return self.models.download_model(self.files, scratch)


def model_input(model: str | CheckedVersion, models: ModelSource | None) -> ModelInput:
    """``model`` (a version the pipeline checked, an MLflow model URI, or a local model
    directory) as lineage and files, without downloading anything."""
    if isinstance(model, CheckedVersion):
        source = _mlflow(models, model_version_uri(model.model, model.version))
        return ModelInput(source.checked_lineage(model), model.files, source)
    if is_model_uri(model):
        source = _mlflow(models, model)
        lineage = source.resolve_model(model)
        # Download the version the labels name: an alias resolved again at download time may
        # have moved to another version meanwhile.
        files = model_version_uri(lineage.name, lineage.version) \
            if lineage.name is not None and lineage.version is not None else model
        return ModelInput(lineage, files, source)
    path = Path(model)
    if not path.is_dir():
        raise UserError(f"{model!r} is neither an MLflow model URI nor a directory",
                        hint="pass models:/NAME/VERSION, runs:/RUN_ID/PATH or a local "
                             "model directory")
    return ModelInput(ModelLineage(source=model, run_id=read_run_id(path)), model)


def _mlflow(models: ModelSource | None, uri: str) -> ModelSource:
    if models is None:
        raise UserError(f"no MLflow tracking URI is configured to resolve {uri}",
                        hint="set MLFLOW_TRACKING_URI or mlflow.tracking_uri in promoter.yaml")
    return models
