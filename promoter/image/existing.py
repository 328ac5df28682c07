"""An image already pushed from the same inputs: found by its tag and the inputs its config
records (``SOURCE_INPUTS_LABEL``), so a rebuild of a registered version downloads nothing.
Shared by the serving image and the modelcar builds."""

from __future__ import annotations

import json

from promoter.image.builder import SOURCE_INPUTS_LABEL
from promoter.image.config import OCI_MANIFEST
from promoter.image.reference import Reference, check_digest
from promoter.ports.image import BuiltImage, ImageRegistry

FOUND_NOTE = "already built from the same inputs: nothing downloaded or pushed"


def find_pushed(client: ImageRegistry, target: Reference, tag: str, wanted: str | None,
                notes: list[str] | None = None) -> BuiltImage | None:
    """The image at ``target:tag`` if its config records exactly ``wanted``; else None."""
    manifest = client.get_manifest(target.repository, tag)
    if manifest is None or manifest.media_type != OCI_MANIFEST:
        return None
    body = json.loads(manifest.body)
    source = f"image {target.name}:{tag}"
    config = client.get_blob(target.repository,
                             check_digest(body["config"]["digest"], f"the config of {source}"))
    recorded = (json.loads(config).get("config") or {}).get("Labels") or {}
    if recorded.get(SOURCE_INPUTS_LABEL) != wanted:
        return None
    layers = body.get("layers", [])
    size = len(manifest.body) + len(config) + sum(int(layer["size"]) for layer in layers)
    return BuiltImage(reference=f"{target.name}@{manifest.digest}", digest=manifest.digest,
                      size=size, layers=[check_digest(layer["digest"], f"a layer of {source}")
                                        for layer in layers],
                      bytes_uploaded=0, tag=tag, notes=[*(notes or []), FOUND_NOTE])
