"""Push targets: a repository in a registry (through the OCI client), or an OCI layout."""

from __future__ import annotations

import hashlib
from typing import Protocol

from promoter.image.layers import Blob


class _Client(Protocol):
    def manifest_digest(self, repository: str, reference: str) -> str | None: ...

    def push_blob(self, repository: str, blob: Blob, *, mount_from: str | None = None) -> int: ...

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]: ...

    def push_new_blob(self, repository: str, blob: Blob) -> tuple[str, int]: ...


class RegistryTarget:
    def __init__(self, client: _Client, repository: str) -> None:
        self.client = client
        self.repository = repository

    def has_manifest(self, digest: str) -> bool:
        return self.client.manifest_digest(self.repository, digest) == digest

    def push_blob(self, blob: Blob, *, mount_from: str | None) -> int:
        return self.client.push_blob(self.repository, blob, mount_from=mount_from)

    def push_new_blob(self, blob: Blob) -> tuple[str, int]:
        return self.client.push_new_blob(self.repository, blob)

    def push_manifest(self, body: bytes, media_type: str, tag: str | None) -> None:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        reference = tag or digest
        if self.client.manifest_digest(self.repository, reference) == digest:
            return  # already there under that name: nothing to send
        self.client.put_manifest(self.repository, reference, body, media_type)
