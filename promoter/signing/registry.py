"""What signing needs from a registry client, and the lookups both formats share."""

from __future__ import annotations

from typing import Any, Protocol

from promoter.errors import UserError
from promoter.image.layers import Blob
from promoter.image.reference import is_digest
from promoter.ports.image import StoredManifest
from promoter.signing import bundle as bundle_format


class SignatureRegistry(Protocol):
    def get_manifest(self, repository: str, reference: str) -> StoredManifest | None: ...

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]: ...

    def get_blob(self, repository: str, digest: str, *, limit: int = ...) -> bytes: ...

    def push_blob(self, repository: str, blob: Blob, *, mount_from: str | None = None) -> int: ...

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None: ...


def subject_descriptor(client: SignatureRegistry, repository: str,
                       digest: str) -> dict[str, Any]:
    manifest = client.get_manifest(repository, digest)
    if manifest is None:
        raise UserError(f"image {repository}@{digest} does not exist in the registry",
                        hint="check the repository and digest (build prints both)")
    return {"mediaType": manifest.media_type or bundle_format.OCI_MANIFEST,
            "digest": digest, "size": len(manifest.body)}


def bundle_blobs(client: SignatureRegistry, repository: str, digest: str) -> list[bytes]:
    """Every Sigstore bundle attached to ``digest`` (referrers API or referrers tag schema)."""
    index = client.referrers(repository, digest)
    if index is None:
        tagged = client.get_manifest(repository, bundle_format.referrers_tag(digest))
        index = bundle_format.index_document(tagged.body) if tagged else {}
    # Entries and layers whose digest is malformed are skipped, never fetched: anyone who may
    # push to the repository can write them, and a bundle of ours is never among them, so
    # refusing the whole index would let them block signing and verification.
    bundles = []
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict) or not is_digest(entry.get("digest")) or \
                entry.get("artifactType") not in (None, bundle_format.BUNDLE_TYPE):
            continue
        referrer = client.get_manifest(repository, entry["digest"])
        if referrer is None:
            continue
        for layer_digest in bundle_format.bundle_layer_digests(referrer.body):
            data = _blob_if_present(client, repository, layer_digest) \
                if is_digest(layer_digest) else None
            if data is not None:
                bundles.append(data)
    return bundles


def _blob_if_present(client: SignatureRegistry, repository: str, digest: str) -> bytes | None:
    """A referrer's bundle, or None when the registry has no such blob (a 404: the client's
    UserError). Like a malformed entry, a referrer naming a missing blob can be pushed (or
    left by a blob deleted later) by anyone with push access; it must not block signing or
    a valid signature's verification."""
    try:
        return client.get_blob(repository, digest)
    except UserError:
        return None
