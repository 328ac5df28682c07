"""Assemble the serving image (base + dependency layer + model layer + config) and push it.

Every step looks first at what already exists: blobs present in the target are skipped, and a
manifest whose digest the target already holds means the whole image is there (a rebuild of
the same inputs uploads nothing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from promoter import __version__
from promoter.image.base import BaseImage
from promoter.image.config import (
    ENTRYPOINT,
    OCI_MANIFEST,
    config_blob,
    image_config,
    image_manifest,
)
from promoter.image.dependencies import dependency_layer
from promoter.image.layers import Blob, Layer, LayerOrigin, measure_tar
from promoter.image.lineage import lineage_labels
from promoter.image.platform import Platform
from promoter.image.tarstream import entries_for_tree
from promoter.ports.image import ModelLineage, WheelInstaller

MODEL_ARCNAME = "opt/ml/model"
BUILD_INPUTS_LABEL = "io.promoter.build-inputs"
SOURCE_INPUTS_LABEL = "io.promoter.source-inputs"


class ImageTarget(Protocol):
    """Where an image goes: a registry repository or an OCI layout directory."""

    def has_manifest(self, digest: str) -> bool: ...

    def push_blob(self, blob: Blob, *, origin: LayerOrigin | None) -> int:
        """Make ``blob`` present; ``origin`` is where it already lies, if anywhere."""

    def push_new_blob(self, blob: Blob) -> tuple[str, int]:
        """Send a blob whose digest is not known yet, hashing it on the way (one read)."""

    def push_manifest(self, body: bytes, media_type: str, tag: str | None) -> None: ...


def _unwatched(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class BuildProgress:
    """Optional callbacks for a watching terminal (promoter.progress.Task fits): what the
    build does now, and blob bytes sent of the total. Default: nobody watches."""

    status: Callable[[str], None] = _unwatched
    transfer: Callable[[str, int, int], None] = _unwatched


@dataclass(frozen=True)
class BuildOptions:
    platform: Platform  # image.platform as set; the base may fill in an open variant
    python_version: str
    pip_options: tuple[str, ...]
    cache_dir: Path
    installer: WheelInstaller  # installs the dependency layer's wheels (pip, an adapter)
    progress: BuildProgress = BuildProgress()


@dataclass(frozen=True)
class Assembled:
    layers: list[Layer]
    config: Blob
    manifest: bytes
    digest: str
    build_inputs: str

    @property
    def size(self) -> int:
        return len(self.manifest) + self.config.size + sum(x.blob.size for x in self.layers)


def _digest_of(data: object) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def source_inputs(lineage: ModelLineage, base: BaseImage | None, labels: Mapping[str, str],
                  options: BuildOptions) -> str | None:
    """Everything a build depends on, named without reading the model's files; None when the
    model's source is mutable (then only the content-based build inputs apply)."""
    if lineage.content_id is None:
        return None
    return _digest_of({
        "builder": f"promoter {__version__}", "content": lineage.content_id,
        "model": [lineage.name, lineage.version, lineage.run_id, lineage.source],
        "base": base.reference.digest if base else None, "platform": list(options.platform.parts()),
        "python": options.python_version, "pip": list(options.pip_options),
        "labels": dict(labels), "entrypoint": ENTRYPOINT})


def assemble(model_dir: Path, lineage: ModelLineage, base: BaseImage | None,
             labels: Mapping[str, str], options: BuildOptions) -> Assembled:
    # The base's index may have chosen the variant image.platform left open (arm: v7, v6…).
    platform = base.platform if base else options.platform
    deps = dependency_layer(model_dir, options.cache_dir / "deps", options.installer,
                            platform=platform, python_version=options.python_version,
                            pip_options=options.pip_options, status=options.progress.status)
    model = measure_tar(entries_for_tree(model_dir, MODEL_ARCNAME), "model")
    ours = [layer for layer in (deps, model) if layer is not None]
    all_labels = {**lineage_labels(lineage, base), **labels}
    inputs = {
        "builder": f"promoter {__version__}",
        "base": base.reference.digest if base else None,
        "platform": str(options.platform),
        "layers": [layer.diff_id for layer in ours],
        "entrypoint": ENTRYPOINT,
        "labels": all_labels,
    }
    inputs_digest = _digest_of(inputs)
    all_labels[BUILD_INPUTS_LABEL] = inputs_digest
    source = source_inputs(lineage, base, labels, options)
    if source is not None:
        all_labels[SOURCE_INPUTS_LABEL] = source
    config = image_config(base.config if base else None, ours, all_labels,
                          platform=platform, with_deps=deps is not None)
    blob = config_blob(config)
    layers = (base.layers if base else []) + ours
    manifest = image_manifest(blob, layers)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return Assembled(layers, blob, manifest, digest, inputs_digest)


def push(image: Assembled, target: ImageTarget, tag: str | None,
         progress: BuildProgress | None = None) -> int:
    """Send what the target lacks; returns the blob bytes uploaded."""
    progress = progress or BuildProgress()
    uploaded = 0
    if not target.has_manifest(image.digest):
        blobs = [(layer.blob, layer.origin) for layer in image.layers]
        blobs.append((image.config, None))
        total, done = sum(blob.size for blob, _ in blobs), 0
        for number, (blob, origin) in enumerate(blobs, 1):
            progress.transfer(f"blob {number}/{len(blobs)}", done, total)
            uploaded += target.push_blob(blob, origin=origin)
            done += blob.size  # checked by size: a blob already there counts as done
        progress.transfer(f"{len(blobs)} blobs", done, total)
    target.push_manifest(image.manifest, OCI_MANIFEST, tag)
    return uploaded
