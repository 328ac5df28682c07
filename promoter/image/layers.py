"""Layers and blobs as descriptors plus a way to re-read their bytes.

``measure_tar`` hashes an uncompressed tar stream in one pass (digest == diff_id);
``write_gzip_layer`` writes a gzip layer file while hashing the uncompressed stream (diff_id)
and the compressed stream (digest) in the same pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from promoter.image.tarstream import TarEntry, tar_chunks

# Blob crosses the registry seam, so it is defined with the ports; re-exported for the formats.
from promoter.ports.image import Blob

TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
FILE_READ_SIZE = 4 * 1024 * 1024

__all__ = ["TAR", "TAR_GZIP", "Blob", "Layer", "LayerOrigin", "bytes_blob", "file_chunks",
           "measure_tar", "replacing_file", "write_gzip_layer"]


@dataclass(frozen=True)
class LayerOrigin:
    """Where an existing (base) layer already lies. The registry is kept with the repository:
    a mount can only name a repository on the target's own registry."""

    registry: str  # as the image reference names it (see reference.same_registry)
    repository: str


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str
    comment: str = ""
    origin: LayerOrigin | None = None  # where an existing (base) layer can be mounted from


def bytes_blob(media_type: str, data: bytes) -> Blob:
    return Blob(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data),
                lambda: iter((data,)))


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(FILE_READ_SIZE):
            yield chunk


def measure_tar(entries: list[TarEntry], comment: str) -> Layer:
    """An uncompressed layer: one hashing pass now, regenerated from disk when uploaded."""
    hasher, size = hashlib.sha256(), 0
    for chunk in tar_chunks(entries):
        hasher.update(chunk)
        size += len(chunk)
    digest = "sha256:" + hasher.hexdigest()
    return Layer(Blob(TAR, digest, size, lambda: tar_chunks(entries)), digest, comment)


@contextlib.contextmanager
def replacing_file(destination: Path) -> Iterator[BinaryIO]:
    """A new file that takes ``destination``'s place only once written whole.

    Each writer gets its own temporary file beside ``destination``: two builds of the same
    cache key (serve workers, replicas sharing a state dir) once shared one name, and the
    second rename found the first had already moved it. A reader sees the old file or the
    whole new one, never a half-written one; a failed write leaves nothing behind.
    """
    handle, partial = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.",
                                       suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
        os.replace(partial, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def write_gzip_layer(entries: list[TarEntry], destination: Path) -> tuple[str, str, int]:
    """Write a deterministic gzip layer; returns (diff_id, digest, size)."""
    raw, packed, size = hashlib.sha256(), hashlib.sha256(), 0
    # wbits=31: gzip wrapper with mtime 0 and no file name, so the bytes depend only on input.
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with replacing_file(destination) as out:
        for chunk in tar_chunks(entries):
            raw.update(chunk)
            data = compressor.compress(chunk)
            if data:
                packed.update(data)
                size += len(data)
                out.write(data)
        tail = compressor.flush()
        packed.update(tail)
        size += len(tail)
        out.write(tail)
    return "sha256:" + raw.hexdigest(), "sha256:" + packed.hexdigest(), size

