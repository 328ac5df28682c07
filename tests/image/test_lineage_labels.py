"""Image labels name the model's lineage without its source's URL credentials."""

from __future__ import annotations

from promoter.image.lineage import lineage_labels
from promoter.ports.image import ModelLineage


def test_a_sources_url_credentials_stay_out_of_the_image_labels() -> None:
    """Whoever may pull the image reads its labels: a source with userinfo or a presigned
    URL's signature was labelled as it was."""
    source = "https://alice:hunter2@models.example.com/m.tar.gz?X-Amz-Signature=deadbeef"
    labels = lineage_labels(ModelLineage(source=source, name="m", version="3"), None)
    masked = "https://***@models.example.com/m.tar.gz?X-Amz-Signature=***"
    assert labels["org.opencontainers.image.source"] == masked
    assert labels["io.promoter.model.source"] == masked
    assert "hunter2" not in str(labels) and "deadbeef" not in str(labels)


def test_a_plain_source_is_labelled_as_it_is() -> None:
    labels = lineage_labels(ModelLineage(source="models:/m-0123abcd"), None)
    assert labels["io.promoter.model.source"] == "models:/m-0123abcd"
