"""The base image: resolve a reference (index → platform manifest), read config and layers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from promoter.errors import PermanentError, UserError
from promoter.image import platform as platforms
from promoter.image.layers import TAR, TAR_GZIP, Blob, Layer, LayerOrigin
from promoter.image.platform import Platform
from promoter.image.reference import Reference, check_digest
from promoter.ports.image import StoredManifest

_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
# Docker layer types carry the same bytes as their OCI twins; our manifest is OCI throughout.
_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": TAR_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": TAR,
}


class BaseSource(Protocol):
    """What reading a base image needs from a registry client."""

    def get_manifest(self, repository: str, reference: str) -> StoredManifest | None: ...

    def get_blob(self, repository: str, digest: str, *, limit: int = ...) -> bytes: ...

    def blob_chunk_source(self, repository: str,
                          digest: str) -> Callable[[], Iterator[bytes]]: ...


@dataclass(frozen=True)
class BaseImage:
    reference: Reference  # with the resolved platform manifest digest
    config: dict[str, Any]
    layers: list[Layer]
    platform: Platform  # image.platform, with the variant the index chose when it left it open


def load_base(client: BaseSource, reference: Reference, platform: Platform) -> BaseImage:
    wanted = reference.digest or reference.tag or "latest"
    manifest = client.get_manifest(reference.repository, wanted)
    if manifest is None:
        raise UserError(f"base image {reference} was not found",
                        hint="check image.base in promoter.yaml or the --base option")
    source = f"base image {reference}"
    data = _json_object(manifest.body, f"the manifest of {source}")
    chosen = platform
    single = not _is_index(manifest, data)
    if not single:
        digest, chosen = _pick_platform(data, platform, reference)
        manifest = client.get_manifest(reference.repository, digest)
        if manifest is None:
            raise UserError(f"base image {reference} lists {digest} for "
                            f"{chosen}, but that manifest is missing")
        data = _json_object(manifest.body, f"the {chosen} manifest of {source}")
        if _is_index(manifest, data):
            raise _malformed(f"{source} lists another index ({digest}) for {chosen}, not an "
                             "image manifest")
    descriptor = data.get("config")
    if not isinstance(descriptor, dict):
        raise _malformed(f"the manifest of {source} has no config descriptor")
    config_digest = check_digest(descriptor.get("digest"), f"the config descriptor of {source}")
    config = _json_object(client.get_blob(reference.repository, config_digest),
                          f"the config of {source}")
    if single:
        chosen = _single_platform(config, platform, reference)
    rootfs = config.get("rootfs", {})
    diff_ids = rootfs.get("diff_ids", []) if isinstance(rootfs, dict) else None
    descriptors = data.get("layers", [])
    if not isinstance(diff_ids, list) or not isinstance(descriptors, list):
        raise _malformed(f"{source} names its layers in neither a list of descriptors nor "
                         "a list of diff_ids")
    if len(diff_ids) != len(descriptors):
        raise UserError(f"base image {reference} is inconsistent: its config lists "
                        f"{len(diff_ids)} layers and its manifest {len(descriptors)}")
    layers = [_layer(client, reference, layer, diff_id)
              for layer, diff_id in zip(descriptors, diff_ids, strict=True)]
    return BaseImage(reference.with_digest(manifest.digest), config, layers,
                     platforms.resolved(platform, chosen))


def _layer(client: BaseSource, reference: Reference, descriptor: object,
           diff_id: object) -> Layer:
    source = f"base image {reference}"
    declared = descriptor.get("mediaType") if isinstance(descriptor, dict) else None
    if not isinstance(descriptor, dict) or not isinstance(declared, str) \
            or not _is_size(descriptor.get("size")) or not isinstance(diff_id, str):
        raise _malformed(f"a layer of {source} has no media type, size or diff_id")
    media_type = _LAYER_TYPES.get(declared, declared)
    # The digest becomes a blob URL and, with --oci-layout, a file name.
    digest = check_digest(descriptor.get("digest"), f"a layer descriptor of {source}")
    chunks = client.blob_chunk_source(reference.repository, digest)
    blob = Blob(media_type, digest, descriptor["size"], chunks)
    origin = LayerOrigin(reference.registry, reference.repository)
    return Layer(blob, diff_id, "base", origin=origin)


def _is_index(manifest: StoredManifest, data: dict[str, Any]) -> bool:
    return manifest.media_type in _INDEX_TYPES or "manifests" in data


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    """``body`` as a JSON object; a registry's damaged (or hostile) answer is named, not a
    traceback."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise _malformed(f"{what} is not a JSON object")
    return data


def _malformed(problem: str) -> PermanentError:
    return PermanentError(f"{problem}: the base image is malformed",
                          hint="the image or its registry is damaged or not to be trusted; "
                               "set image.base (or --base) to another image")


def _pick_platform(index: dict[str, Any], platform: Platform,
                   reference: Reference) -> tuple[str, Platform]:
    """The digest of the index entry for ``platform`` and the platform that entry declares."""
    listed = index.get("manifests")
    entries = [entry for entry in listed if isinstance(entry, dict)] \
        if isinstance(listed, list) else []
    picked = platforms.pick(entries, platform)
    if picked is None:
        raise UserError(f"base image {reference} has no {platform} image; it offers "
                        f"{platforms.offered(entries)}",
                        hint="set image.platform in promoter.yaml to one the base offers")
    position, chosen = picked
    digest = check_digest(entries[position].get("digest"), f"the index of base image {reference}")
    return digest, chosen


def _single_platform(config: dict[str, Any], platform: Platform, reference: Reference) -> Platform:
    """The platform of a base that is one image (no index to pick from), checked against
    ``platform``: its layers and config would otherwise go into an image labelled and given
    dependencies for another architecture, which fails only on the node (exec format error)."""
    declared = platforms.config_platform(config)
    if declared is None:
        return platform  # the config names none: nothing to compare
    if not platforms.serves(platform, declared):
        raise UserError(f"base image {reference} is a single {declared} image, and "
                        f"image.platform is {platform}",
                        hint=f"use a base built for {platform} (or a multi-platform index "
                             f"that lists it), or set image.platform to {declared}")
    return declared if declared.variant else platform
