"""Chunked, streaming blob upload (distribution spec: POST → PATCH… → PUT ?digest=).

Chunks are re-assembled to the client's chunk size (16 MiB by default) so memory stays flat
whatever the blob size. A failure mid-upload restarts the whole upload session, because a
PATCH that may or may not have landed cannot be repeated safely.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from promoter.errors import PermanentError, TransientError
from promoter.image.layers import Blob

if TYPE_CHECKING:
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


def _rechunk(blob: Blob, size: int) -> Iterator[bytes]:
    assert blob.chunks is not None
    buffer = bytearray()
    for piece in blob.chunks():
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _upload_once(client: RegistryClient, repository: str, blob: Blob) -> int:
    what = f"uploading blob {blob.digest[:19]} to {repository}"
    response = client.request("POST", f"/v2/{repository}/blobs/uploads/", expect={202},
                              what=what)
    location = _location(response.headers.get("Location"), what)
    offset = 0
    for chunk in _rechunk(blob, client.chunk_size):
        end = offset + len(chunk) - 1
        response = client.request(
            "PATCH", location, content=chunk, expect={202}, what=what, retry=False,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))})
        location = _location(response.headers.get("Location"), what)
        offset += len(chunk)
    if offset != blob.size:
        raise PermanentError(f"blob {blob.digest} was expected to be {blob.size} bytes but "
                             f"{offset} were read; did the model files change during the build?",
                             hint="run the build again once the files are stable")
    # Location keeps the upload state in its query: add the digest rather than replace it.
    separator = "&" if "?" in location else "?"
    finish = f"{location}{separator}{urlencode({'digest': blob.digest})}"
    client.request("PUT", finish, expect={201}, what=what, retry=False,
                   headers={"Content-Length": "0"})
    return offset


def _location(value: str | None, what: str) -> str:
    if not value:
        raise PermanentError(f"the registry sent no upload Location while {what}")
    return value
