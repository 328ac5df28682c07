"""Small JSON records ``{"digest": "sha256:…"}`` keyed by a sha256 (a layer's identity, a
build's source inputs), one file each under a cache directory of the state dir.

A record is a cache: a missing or unreadable one is a miss, and a failed write is logged and
forgotten (the build it describes already succeeded; the next build only redoes work). Writes
go through a temporary file unique to the writer, then an atomic rename: worker threads of one
process (two environments promoting the same version) write the same record at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

_log = logging.getLogger("promoter.image")


class DigestRecords:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        name = key.removeprefix("sha256:")
        if not name.isalnum():  # a digest's hex, never a path
            raise ValueError(f"record key {key!r} is not a sha256 digest")
        return self.directory / f"{name}.json"

    def get(self, key: str) -> str | None:
        try:
            digest = json.loads(self._path(key).read_text(encoding="utf-8")).get("digest")
        except (OSError, ValueError, AttributeError):
            return None
        return digest if isinstance(digest, str) and digest.startswith("sha256:") else None

    def put(self, key: str, digest: str) -> None:
        path = self._path(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.",
                                               suffix=".partial")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump({"digest": digest}, out)
                os.replace(partial, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
        except OSError as exc:
            _log.warning("could not record %s in %s: %s", digest, self.directory, exc)
