"""What signing needs from a registry client, and the lookups both formats share."""

from __future__ import annotations

from typing import Any, Protocol

from promoter.errors import UnacceptableContent, UserError
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
        referrer = _referrer_if_readable(client, repository, entry["digest"])
        if referrer is None:
            continue
        for layer_digest in bundle_format.bundle_layer_digests(referrer):
            data = readable_blob(client, repository, layer_digest) \
                if is_digest(layer_digest) else None
            if data is not None:
                bundles.append(data)
    return bundles


# What a registry raises for something it will not hand over whole: a 404 (UserError), and a
# body over the client's size cap or not matching its digest (UnacceptableContent). Outages
# (TransientError), refused credentials (AuthError) and a refusal such as a 403
# (PermanentError) are neither, and still propagate: "unsigned" or "tampered" would be a
# confident verdict on what promoter was not allowed to read.
_UNREADABLE = (UserError, UnacceptableContent)


def readable_blob(client: SignatureRegistry, repository: str, digest: str) -> bytes | None:
    """A signature's blob (a referrer's bundle, a legacy payload), or None when the registry
    has none or will not give it whole. Like a malformed entry, such a blob can be pushed (or
    left by a blob deleted later) by anyone with push access; it must not block signing or a
    valid signature's verification."""
    try:
        return client.get_blob(repository, digest)
    except _UNREADABLE:
        return None


def _referrer_if_readable(client: SignatureRegistry, repository: str,
                          digest: str) -> bytes | None:
    """A referrer manifest's body, or None when it is gone, oversized or not its digest: for
    the reason readable_blob gives, a referrer anyone may push must not block signing."""
    try:
        referrer = client.get_manifest(repository, digest)
    except _UNREADABLE:
        return None
    return None if referrer is None else referrer.body
