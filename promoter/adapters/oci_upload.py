"""Chunked, streaming blob upload (distribution spec: POST → PATCH… → PUT ?digest=).

One PATCH carries the whole blob, or each carries the client's chunk size when one is set
(``image.upload_chunk_mib``), streamed from the layer's own 1-4 MiB pieces, so memory stays
flat whatever the blob or chunk size. A PATCH refused before
any of it was accepted (a 401 for a token that expired meanwhile; the auth flow has renewed it)
resumes where the registry says the upload stands; any other failure mid-upload restarts the
whole upload session, because a PATCH that may or may not have landed cannot be repeated safely.
A session given up on is deleted, so failed attempts leave no bytes in the registry's uploads.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import httpx

from promoter.adapters.oci_errors import StreamedRequestRefused
from promoter.adapters.oci_hashing import BackgroundHash
from promoter.adapters.oci_origin import upload_location
from promoter.errors import PermanentError, TransientError
from promoter.ports.image import Blob

if TYPE_CHECKING:
    from promoter.adapters.oci import RegistryClient


def upload_blob(client: RegistryClient, repository: str, blob: Blob) -> int:
    for attempt in range(1, client.attempts + 1):
        try:
            return _upload_once(client, repository, _Pieces(blob, None))
        except TransientError:
            if attempt == client.attempts:
                raise
            time.sleep(client.backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def upload_hashing(client: RegistryClient, repository: str, blob: Blob) -> tuple[str, int]:
    """Upload ``blob`` (its size known, its digest not yet) hashing it as it is sent: one read
    of the bytes instead of a hashing pass plus an upload pass, and the hash computed on a
    thread of its own (promoter.adapters.oci_hashing) while the bytes go out. The registry
    checks the digest given at the final PUT against what it received. Returns (digest,
    bytes sent)."""
    for attempt in range(1, client.attempts + 1):
        pieces = _Pieces(blob, BackgroundHash())
        try:
            sent = _upload_once(client, repository, pieces)
            return pieces.digest(), sent
        except TransientError:
            if attempt == client.attempts:
                raise
            time.sleep(client.backoff * 2 ** (attempt - 1))
        finally:
            pieces.close()
    raise AssertionError("unreachable")  # pragma: no cover


class _Pieces:
    """The blob's chunk stream cut into request bodies of exact lengths, without copying
    into large buffers: each request streams the source's own (1-4 MiB) pieces.

    With a ``hasher`` (digest not known yet) the pieces are hashed as they are handed out, so
    the hash covers exactly the bytes given to requests. Resuming only ever happens at the
    start of a PATCH the registry never accepted (``resume_at``): the hash state saved there
    (``mark``) covers exactly the bytes the registry holds, and the source is re-read from the
    start and the bytes before that point discarded unhashed. The digest thus stays the one of
    the bytes the registry received, even if the source changed between the two reads."""

    def __init__(self, blob: Blob, hasher: BackgroundHash | None) -> None:
        assert blob.chunks is not None
        self.blob = blob
        self._chunks = blob.chunks
        self._hasher = hasher
        self._source = iter(self._chunks())
        self._pending = b""
        self._failure: Exception | None = None

    def take(self, length: int) -> Iterator[bytes]:
        """``length`` bytes of the blob for one request body.

        If the source fails part way (it ended early, a read failed), the body is completed
        with zeros and the failure kept for ``raise_failure`` once the request is answered: a
        request cut off mid-body leaves the registry still handling it, and distribution
        writes the session's state as that handler ends, so a DELETE sent meanwhile could
        not remove the session. An answered request has settled it."""
        try:
            for piece in self._cut(length):
                if self._hasher is not None:
                    self._hasher.update(piece)
                length -= len(piece)
                yield piece
        except Exception as exc:
            self._failure = exc
            yield from _zeros(length)

    def raise_failure(self) -> None:
        """Raise what made ``take`` complete a body with zeros, if anything did. A source that
        could not be read (another registry's connection dropped, a read error) is a
        TransientError, as it was when it surfaced inside the request: the upload is tried
        again."""
        failure = self._failure
        if failure is None:
            return
        if isinstance(failure, httpx.TransportError | OSError):
            raise TransientError(f"reading the blob's source failed while uploading: "
                                 f"{type(failure).__name__}: {failure}") from None
        raise failure

    def _cut(self, length: int) -> Iterator[bytes]:
        while length > 0:
            if not self._pending:
                self._pending = next(self._source, b"")
                if not self._pending:
                    raise PermanentError("the blob ended early while uploading; did the model "
                                         "files change during the build?")
            piece, self._pending = self._pending[:length], self._pending[length:]
            length -= len(piece)
            yield piece

    def mark(self) -> hashlib._Hash | None:
        return self._hasher.state() if self._hasher is not None else None

    def resume_at(self, offset: int, mark: hashlib._Hash | None) -> None:
        """Continue from byte ``offset``; ``mark`` is the hash state saved at that offset."""
        if self._hasher is not None:
            self._hasher.close()
            self._hasher = BackgroundHash(mark)
        self._source, self._pending = iter(self._chunks()), b""
        for _ in self._cut(offset):
            pass

    def exhausted(self) -> bool:
        return not self._pending and next(self._source, b"") == b""

    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest() if self._hasher is not None \
            else self.blob.digest

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.close()


class _Session:
    """An open upload session: where its next request goes (each answer may move it)."""

    def __init__(self, location: str) -> None:
        self.location = location


def _upload_once(client: RegistryClient, repository: str, pieces: _Pieces) -> int:
    blob = pieces.blob
    what = f"uploading blob {blob.digest[:19] or 'of a new layer'} to {repository}"
    response = client.request("POST", f"/v2/{repository}/blobs/uploads/", expect={202},
                              what=what)
    session = _Session(_location(client, response, what))
    try:
        return _send(client, session, pieces, what)
    except Exception:
        # Left open, the session keeps what was sent in the registry's uploads until the
        # registry purges it (distribution: after a week), and each retry opens another.
        client.discard_upload(session.location)
        raise


def _send(client: RegistryClient, session: _Session, pieces: _Pieces, what: str) -> int:
    """PATCH the blob into ``session`` chunk by chunk and close it with the digest."""
    blob = pieces.blob
    offset, resumes = 0, 0
    while offset < blob.size:
        length = blob.size - offset if client.chunk_size is None \
            else min(client.chunk_size, blob.size - offset)
        mark = pieces.mark()
        try:
            response = client.request(
                "PATCH", session.location, content=pieces.take(length), expect={202},
                what=what, retry=False,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Range": f"{offset}-{offset + length - 1}",
                         "Content-Length": str(length)})
        except StreamedRequestRefused:
            pieces.raise_failure()  # the source failed: nothing worth resuming
            # Count only resumes without progress in between: a long upload may outlive
            # several tokens, but a registry refusing the same chunk again and again must not
            # keep us busy forever.
            resumes += 1
            if resumes > client.attempts:
                raise
            session.location = _resume(client, session.location, offset, what)
            pieces.resume_at(offset, mark)
            continue
        session.location = _location(client, response, what)
        pieces.raise_failure()  # only now: the session's state is settled, it can be deleted
        offset, resumes = offset + length, 0
    if not pieces.exhausted():
        raise PermanentError(f"blob {blob.digest} is longer than the {blob.size} bytes "
                             "expected; did the model files change during the build?",
                             hint="run the build again once the files are stable")
    # Location keeps the upload state in its query: add the digest rather than replace it.
    separator = "&" if "?" in session.location else "?"
    finish = f"{session.location}{separator}{urlencode({'digest': pieces.digest()})}"
    client.request("PUT", finish, expect={201}, what=what, retry=False,
                   headers={"Content-Length": "0"})
    return offset


def _zeros(length: int) -> Iterator[bytes]:
    """``length`` zero bytes, a piece of at most 1 MiB at a time."""
    piece = bytes(min(length, 1024 * 1024))
    while length > 0:
        yield piece[:length]
        length -= len(piece)


def _resume(client: RegistryClient, location: str, offset: int, what: str) -> str:
    """Ask the registry how far the upload got (``GET <location>``: 204, ``Range: 0-<last>``)
    and return the location to continue at ``offset``. Anything but exactly ``offset`` bytes
    held (or nothing sent yet, where distribution's ``0-0`` is ambiguous) restarts the upload:
    the bytes before the refused PATCH are the only ones whose hash state was kept."""
    if offset == 0:
        raise TransientError(f"the registry refused the first chunk while {what}")
    response = client.request("GET", location, expect={204}, what=what)
    held = response.headers.get("Range", "")
    first, _, last = held.partition("-")
    if first != "0" or not last.isdigit() or int(last) + 1 != offset:
        raise TransientError(f"the registry holds {held or 'an unknown range'} of the upload, "
                             f"not the {offset} bytes sent, while {what}")
    return _location(client, response, what) if response.headers.get("Location") \
        else location


def _location(client: RegistryClient, response: httpx.Response, what: str) -> str:
    return upload_location(client.registry, client.base_url, response, what)
