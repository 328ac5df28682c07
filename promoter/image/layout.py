"""A standard OCI image layout on disk (oci-layout, index.json, blobs/sha256/…).

Several builds may write one layout at once (`serve --workers N` with ``image.oci_layout``):
each blob is written to a temporary file of its own and renamed into place whole, and
index.json is read, changed and replaced under an exclusive lock, so no build's manifest is
lost to another's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from promoter.errors import UserError
from promoter.image.config import canonical_json
from promoter.image.layers import Blob, LayerOrigin
from promoter.image.reference import check_digest

INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = '{"imageLayoutVersion":"1.0.0"}'
# What a layout holds at its top. A build creating a new layout makes blobs/ before
# oci-layout: another build starting meanwhile must not take the folder for foreign content.
LAYOUT_FILES = frozenset({"oci-layout", "index.json", "blobs"})


class LayoutTarget:
    """Write blobs (streamed, digest-checked) and record the manifest in index.json."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if root.exists() and not (root / "oci-layout").is_file() and \
                any(path.name not in LAYOUT_FILES for path in root.iterdir()):
            raise UserError(f"{root} exists and is not an OCI layout",
                            hint="choose an empty or new directory for --oci-layout")
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        self._write_oci_layout()
        with self._index_locked():
            if not (root / "index.json").is_file():
                self._write_index({"schemaVersion": 2, "mediaType": INDEX, "manifests": []})
        self.bytes_uploaded = 0

    def _write_oci_layout(self) -> None:
        """Created once, whole, and never rewritten: another build creating the same new
        layout meanwhile may already hold the index lock on it (a rewrite through a new file
        would let both hold "the" lock), and a reader never sees it empty."""
        partial = self._partial()
        try:
            partial.write_text(OCI_LAYOUT, encoding="utf-8")
            try:
                os.link(partial, self.root / "oci-layout")   # atomic; fails when present
            except FileExistsError:
                pass
            except OSError:  # no hard links here (vfat, a FUSE or SMB mount): create it alone
                self._create_oci_layout_exclusively()
        finally:
            partial.unlink()

    def _create_oci_layout_exclusively(self) -> None:
        """oci-layout made by O_EXCL instead: one creator, though a reader may see it empty
        for an instant (the index lock needs only the file, not its content)."""
        try:
            descriptor = os.open(self.root / "oci-layout", os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                 0o666)
        except FileExistsError:
            return
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(OCI_LAYOUT)
            file.flush()
            os.fsync(file.fileno())

    def _blob_path(self, digest: str) -> Path:
        # Digests of base layers come from a registry: checked, so none can name ../ paths.
        checked = check_digest(digest, f"a blob written to the OCI layout {self.root}")
        return self.root / "blobs" / "sha256" / checked.removeprefix("sha256:")

    def has_manifest(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def push_blob(self, blob: Blob, *, origin: LayerOrigin | None) -> int:
        path = self._blob_path(blob.digest)
        if path.is_file():
            return 0
        if blob.chunks is None:
            raise UserError(f"blob {blob.digest} cannot be read to write the layout")
        partial = self._partial()
        digest, size = _write_capped(blob, partial)
        if digest != blob.digest or size != blob.size:
            partial.unlink()
            raise UserError(f"blob {blob.digest} changed while being written; build again")
        os.replace(partial, path)
        self.bytes_uploaded += size
        return size

    def push_new_blob(self, blob: Blob) -> tuple[str, int]:
        """Write a blob whose digest is computed while writing; returns (digest, bytes)."""
        if blob.chunks is None:
            raise UserError("a new blob needs its bytes to be written")
        partial = self._partial()
        digest, size = _write_capped(blob, partial)
        if size != blob.size:
            partial.unlink()
            raise UserError(f"a layer of {blob.size} bytes came out as {size}; build again")
        if self._blob_path(digest).is_file():
            partial.unlink()
            return digest, 0
        os.replace(partial, self._blob_path(digest))
        self.bytes_uploaded += size
        return digest, size

    def push_manifest(self, body: bytes, media_type: str, tag: str | None) -> None:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        path = self._blob_path(digest)
        if not path.is_file():
            self._replace_whole(path, body)
        entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
        if tag:
            entry["annotations"] = {REF_NAME: tag}
        with self._index_locked():
            index = json.loads((self.root / "index.json").read_text(encoding="utf-8"))
            index["manifests"] = [*_still_recorded(index.get("manifests", []), digest, tag),
                                  entry]
            self._write_index(index)

    def _partial(self) -> Path:
        """A new temporary file in the blobs directory, this writer's alone. Made with the
        umask's mode, as the layout's other files are (mkstemp's 0600 would follow the blob
        into place, and other users' skopeo or umoci could not read the layout)."""
        while True:
            path = self.root / "blobs" / "sha256" / f"new-{uuid.uuid4().hex}.partial"
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:  # pragma: no cover - a uuid4 collision
                continue
            return path

    @contextlib.contextmanager
    def _index_locked(self) -> Iterator[None]:
        """index.json's read-modify-write, one writer at a time. The lock is taken on the
        ``oci-layout`` file, which every layout has and nobody replaces (index.json is
        replaced, so a lock on it would not hold), so the layout gains no file of its own."""
        with (self.root / "oci-layout").open("rb") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write_index(self, index: dict[str, Any]) -> None:
        """Replaced whole: a reader (skopeo, umoci) never sees it half-written."""
        self._replace_whole(self.root / "index.json", canonical_json(index))

    def _replace_whole(self, path: Path, data: bytes) -> None:
        """Write ``data`` to a temporary file and rename it to ``path``; the temporary file
        never outlives a failure (a full disk), as in _write_capped."""
        partial = self._partial()
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def _still_recorded(manifests: list[dict[str, Any]], digest: str,
                    tag: str | None) -> list[dict[str, Any]]:
    """The index entries a new entry for ``digest`` (named ``tag``, if any) leaves in place.
    It replaces the entry that held its tag and an untagged one of its digest; another tag
    of the same manifest (v7 and latest) is a name of its own and stays."""
    def replaced(item: dict[str, Any]) -> bool:
        name = (item.get("annotations") or {}).get(REF_NAME)
        return (bool(tag) and name == tag) or (name is None and item.get("digest") == digest)
    return [item for item in manifests if not replaced(item)]


def _write_capped(blob: Blob, partial: Path) -> tuple[str, int]:
    """Write ``blob``'s chunks to ``partial``: (sha256 digest, bytes). A source that sends
    more than the blob's declared size (a base registry that keeps streaming) is cut off there
    instead of filling the disk; the partial file never outlives a failure."""
    assert blob.chunks is not None
    hasher, size = hashlib.sha256(), 0
    try:
        with partial.open("wb") as out:
            for chunk in blob.chunks():
                size += len(chunk)
                if size > blob.size:
                    raise UserError(f"blob {blob.digest or 'of a new layer'} is longer than "
                                    f"its {blob.size} bytes; its source is damaged or not to "
                                    "be trusted")
                hasher.update(chunk)
                out.write(chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return "sha256:" + hasher.hexdigest(), size
