"""Push targets: a repository in a registry (through the OCI client), or an OCI layout."""

from __future__ import annotations

import hashlib
from typing import Protocol

from promoter.image.layers import Blob, LayerOrigin
from promoter.image.reference import Reference, same_registry


class _Client(Protocol):
    def manifest_digest(self, repository: str, reference: str) -> str | None: ...

    def push_blob(self, repository: str, blob: Blob, *, mount_from: str | None = None) -> int: ...

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]: ...

    def push_new_blob(self, repository: str, blob: Blob) -> tuple[str, int]: ...


def mount_source(origin: LayerOrigin | None, target: Reference) -> str | None:
    """The repository to ask ``target``'s registry to mount a blob from, or None to send it.

    A mount's ``from`` is a repository of the target's own registry: for a layer that lies
    on another registry (a Docker Hub base under a GitLab-hosted image) it would name some
    unrelated repository there, or none. GitLab's token service leaves such a repository out
    of the token, so the mount came back 401 and the build failed as if the credentials were
    wrong. docker and go-containerregistry only mount within one registry; so does promoter,
    and streams anything else over from its own registry."""
    if origin is None or not same_registry(origin.registry, target.registry):
        return None
    return origin.repository


class RegistryTarget:
    def __init__(self, client: _Client, reference: Reference) -> None:
        self.client = client
        self.reference = reference
        self.repository = reference.repository

    def has_manifest(self, digest: str) -> bool:
        return self.client.manifest_digest(self.repository, digest) == digest

    def push_blob(self, blob: Blob, *, origin: LayerOrigin | None) -> int:
        return self.client.push_blob(self.repository, blob,
                                     mount_from=mount_source(origin, self.reference))

    def push_new_blob(self, blob: Blob) -> tuple[str, int]:
        return self.client.push_new_blob(self.repository, blob)

    def push_manifest(self, body: bytes, media_type: str, tag: str | None) -> None:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        reference = tag or digest
        if self.client.manifest_digest(self.repository, reference) == digest:
            return  # already there under that name: nothing to send
        self.client.put_manifest(self.repository, reference, body, media_type)
