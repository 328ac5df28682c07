"""Chunked, streaming blob upload (distribution spec: POST → PATCH… → PUT ?digest=).

Each PATCH carries the client's chunk size (128 MiB by default), streamed from the layer's own
1-4 MiB pieces, so memory stays flat whatever the blob or chunk size. A failure mid-upload
restarts the whole upload session, because a PATCH that may or may not have landed cannot be
repeated safely.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from promoter.adapters.oci_origin import upload_location
from promoter.errors import PermanentError, TransientError
from promoter.ports.image import Blob

if TYPE_CHECKING:
    import httpx

    from promoter.adapters.oci import RegistryClient


def upload_blob(client: RegistryClient, repository: str, blob: Blob) -> int:
    for attempt in range(1, client.attempts + 1):
        try:
            return _upload_once(client, repository, blob)
        except TransientError:
            if attempt == client.attempts:
                raise
            time.sleep(client.backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def upload_hashing(client: RegistryClient, repository: str, blob: Blob) -> tuple[str, int]:
    """Upload ``blob`` (its size known, its digest not yet) hashing it as it is sent: one read
    of the bytes instead of a hashing pass plus an upload pass. The registry checks the
    digest given at the final PUT against what it received. Returns (digest, bytes sent)."""
    for attempt in range(1, client.attempts + 1):
        hashing = _Hashing(blob)
        try:
            sent = _upload_once(client, repository, hashing.blob, digest=hashing.digest)
            return hashing.digest(), sent
        except TransientError:
            if attempt == client.attempts:
                raise
            time.sleep(client.backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


class _Hashing:
    """One attempt's view of a blob: its chunks, hashed as they are read."""

    def __init__(self, blob: Blob) -> None:
        assert blob.chunks is not None
        self._source = blob.chunks
        self._hasher = hashlib.sha256()
        self.blob = Blob(blob.media_type, "", blob.size, self._chunks)

    def _chunks(self) -> Iterator[bytes]:
        for chunk in self._source():
            self._hasher.update(chunk)
            yield chunk

    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()


class _Pieces:
    """The blob's chunk stream cut into request bodies of exact lengths, without copying
    into large buffers: each request streams the source's own (1-4 MiB) pieces."""

    def __init__(self, blob: Blob) -> None:
        assert blob.chunks is not None
        self._source = iter(blob.chunks())
        self._pending = b""

    def take(self, length: int) -> Iterator[bytes]:
        while length > 0:
            if not self._pending:
                self._pending = next(self._source, b"")
                if not self._pending:
                    raise PermanentError("the blob ended early while uploading; did the model "
                                         "files change during the build?")
            piece, self._pending = self._pending[:length], self._pending[length:]
            length -= len(piece)
            yield piece

    def exhausted(self) -> bool:
        return not self._pending and next(self._source, b"") == b""


def _upload_once(client: RegistryClient, repository: str, blob: Blob,
                 digest: Callable[[], str] | None = None) -> int:
    what = f"uploading blob {blob.digest[:19] or 'of a new layer'} to {repository}"
    response = client.request("POST", f"/v2/{repository}/blobs/uploads/", expect={202},
                              what=what)
    location = _location(client, response, what)
    offset, pieces = 0, _Pieces(blob)
    while offset < blob.size:
        length = min(client.chunk_size, blob.size - offset)
        response = client.request(
            "PATCH", location, content=pieces.take(length), expect={202}, what=what,
            retry=False, headers={"Content-Type": "application/octet-stream",
                                  "Content-Range": f"{offset}-{offset + length - 1}",
                                  "Content-Length": str(length)})
        location = _location(client, response, what)
        offset += length
    if not pieces.exhausted():
        raise PermanentError(f"blob {blob.digest} is longer than the {blob.size} bytes "
                             "expected; did the model files change during the build?",
                             hint="run the build again once the files are stable")
    # Location keeps the upload state in its query: add the digest rather than replace it.
    separator = "&" if "?" in location else "?"
    final = digest() if digest is not None else blob.digest
    finish = f"{location}{separator}{urlencode({'digest': final})}"
    client.request("PUT", finish, expect={201}, what=what, retry=False,
                   headers={"Content-Length": "0"})
    return offset


def _location(client: RegistryClient, response: httpx.Response, what: str) -> str:
    return upload_location(client.registry, client.base_url, response, what)
