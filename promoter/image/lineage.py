"""Image labels: OCI annotations keys plus the model's lineage (name, version, run, source)."""

from __future__ import annotations

from pathlib import Path

from promoter.core.masking import without_url_credentials
from promoter.image.base import BaseImage
from promoter.ports.image import ModelLineage


def read_run_id(model_dir: Path) -> str | None:
    """MLflow writes ``run_id: …`` into MLmodel for logged models."""
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    for line in mlmodel.read_text(encoding="utf-8").splitlines():
        if line.startswith("run_id:"):
            value = line.split(":", 1)[1].strip().strip("'\"")
            return value or None
    return None


def lineage_labels(lineage: ModelLineage, base: BaseImage | None) -> dict[str, str]:
    # Labels are readable by whoever may pull the image: a source's URL credentials
    # (userinfo, a presigned URL's signature) stay out.
    source = without_url_credentials(lineage.source)
    labels = {
        "org.opencontainers.image.title": lineage.name or "mlflow-model",
        "org.opencontainers.image.source": source,
        "io.promoter.model.source": source,
    }
    if lineage.name:
        labels["io.promoter.model.name"] = lineage.name
    if lineage.version:
        labels["org.opencontainers.image.version"] = lineage.version
        labels["io.promoter.model.version"] = lineage.version
    if lineage.run_id:
        labels["org.opencontainers.image.revision"] = lineage.run_id
        labels["io.promoter.model.run-id"] = lineage.run_id
    if base is not None:
        labels["org.opencontainers.image.base.name"] = base.reference.name
        labels["org.opencontainers.image.base.digest"] = str(base.reference.digest)
    return labels
