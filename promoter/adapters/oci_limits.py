"""Size caps on what registries and their token services send back.

A registry is not trusted to be small: a hostile base-image registry could answer a manifest
GET with gigabytes and exhaust memory before any digest check runs. Every response of a
registry client passes through ``body_cap_hook``, which checks Content-Length first and then
counts the bytes as they stream in, so reading stops at the cap. The cap for a request travels
with it as an httpx request extension (``body_limit``), which httpx keeps across redirects and
the auth flow's re-sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx

from promoter.errors import UnacceptableContent

MANIFEST_LIMIT = 4 * 1024 * 1024  # what distribution itself accepts for a manifest or index
TOKEN_LIMIT = 256 * 1024  # a bearer token answer is a few KiB even with an x5c chain
SMALL_LIMIT = 256 * 1024  # answers that carry no payload (HEAD, POST/PATCH/PUT of uploads)
ERROR_LIMIT = 64 * 1024  # error bodies are only read for their codes; the rest is dropped
_EXTENSION = "promoter.body_limit"


def body_limit(limit: int | None, what: str) -> dict[str, Any]:
    """Request extensions capping a successful answer at ``limit`` bytes (None: no cap, for
    streamed blob copies); ``what`` names the thing asked for in the error."""
    return {_EXTENSION: (limit, what)}


def body_cap_hook(source: str) -> Callable[[httpx.Response], None]:
    """An httpx response hook enforcing the request's cap; ``source`` names the registry."""

    def cap(response: httpx.Response) -> None:
        if response.request.method == "HEAD":
            return  # no body; its Content-Length describes the thing asked about (a blob)
        limit, what = response.request.extensions.get(_EXTENSION, (SMALL_LIMIT, "an answer"))
        if not response.is_success:
            # An error or redirect body only feeds a message: truncate it, keep the status.
            response.stream = _Capped(response.stream, ERROR_LIMIT, None)
            return
        if limit is None:
            return

        def too_large() -> UnacceptableContent:
            return UnacceptableContent(
                f"{source} sent more than {_size(limit)} for {what}; promoter stops reading "
                "there rather than hold an answer that large in memory",
                hint="check that the registry and reference are the intended ones")

        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # Compressed answers were not asked for (Accept-Encoding: identity); counting the
            # compressed bytes would let a small answer inflate past the cap.
            raise UnacceptableContent(f"{source} sent {what} compressed ({encoding}) although "
                                 "promoter asked for it uncompressed")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large()
        response.stream = _Capped(response.stream, limit, too_large)

    return cap


class _Capped(httpx.SyncByteStream):
    """A response stream that ends (``too_large`` None) or fails once past ``limit`` bytes."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, limit: int,
                 too_large: Callable[[], Exception] | None) -> None:
        assert isinstance(stream, httpx.SyncByteStream)
        self._stream = stream
        self._limit = limit
        self._too_large = too_large

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                if self._too_large is not None:
                    raise self._too_large()
                yield chunk[:len(chunk) - (seen - self._limit)]
                return
            yield chunk

    def close(self) -> None:
        self._stream.close()


def _size(limit: int) -> str:
    if limit >= 1024 * 1024 and limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit >= 1024 and limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"
