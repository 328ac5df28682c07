"""The Signer port implemented with cosign formats, both written by default.

Signing looks first: a signature by the same key over the same digest that already verifies
is kept and nothing is written, so re-signing is a no-op. The tags listing signatures are shared
with other signers; promoter.signing.tags adds our entry without losing anyone's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from promoter.errors import UserError
from promoter.image.layers import bytes_blob
from promoter.image.reference import Reference, parse_reference
from promoter.ports.image import SignatureInfo
from promoter.signing import bundle as bundle_format
from promoter.signing import simple
from promoter.signing.keys import PublicKey, SigningKey
from promoter.signing.registry import SignatureRegistry, bundle_blobs, subject_descriptor
from promoter.signing.tags import Pause, TagContent, add_to_tag, jittered_settle
from promoter.signing.verify import Outcome, bundle_outcome, legacy_outcomes, settle

ClientFactory = Callable[[str], AbstractContextManager[SignatureRegistry]]


def digest_reference(text: str) -> Reference:
    reference = parse_reference(text)
    if reference.digest is None:
        raise UserError(f"{text!r} names no digest; signatures are made over exact digests",
                        hint="pass REPOSITORY@sha256:… as printed by `promoter image build`")
    return reference


class CosignSigner:
    def __init__(self, clients: ClientFactory, *, signing_key: SigningKey | None = None,
                 public_key: PublicKey | None = None,
                 formats: Sequence[str] = ("bundle", "legacy"),
                 settle_delay: Pause = jittered_settle) -> None:
        self._clients = clients
        self._settle_delay = settle_delay
        self._key = signing_key
        self._public = public_key or (signing_key.public if signing_key else None)
        self._formats = tuple(formats)

    @property
    def key_hint(self) -> str | None:
        return self._public.hint if self._public else None

    def sign(self, reference_with_digest: str) -> SignatureInfo:
        if self._key is None:
            raise UserError("signing needs a private key", hint="pass --key cosign.key")
        reference = digest_reference(reference_with_digest)
        digest = str(reference.digest)
        created = []
        with self._clients(reference.api_host) as client:
            subject = subject_descriptor(client, reference.repository, digest)
            if "legacy" in self._formats and self._sign_legacy(client, reference, digest):
                created.append("legacy")
            if "bundle" in self._formats and self._sign_bundle(client, reference, subject):
                created.append("bundle")
        return SignatureInfo(f"{reference.name}@{digest}", digest, list(self._formats),
                             self._key.public.hint, created)

    def verify(self, reference_with_digest: str) -> SignatureInfo:
        if self._public is None:
            raise UserError("verification needs a public key", hint="pass --key cosign.pub")
        reference = digest_reference(reference_with_digest)
        digest = str(reference.digest)
        with self._clients(reference.api_host) as client:
            subject_descriptor(client, reference.repository, digest)
            outcomes = self._outcomes(client, reference, digest)
        good = settle(outcomes, reference_with_digest, self._public)
        return SignatureInfo(f"{reference.name}@{digest}", digest, good, self._public.hint)

    def _outcomes(self, client: SignatureRegistry, reference: Reference,
                  digest: str) -> list[Outcome]:
        assert self._public is not None
        outcomes = [bundle_outcome(data, digest, self._public)
                    for data in bundle_blobs(client, reference.repository, digest)]
        tagged = client.get_manifest(reference.repository, simple.signature_tag(digest))
        if tagged is not None:
            outcomes += legacy_outcomes(client, reference.repository, tagged.body, digest,
                                        self._public)
        return outcomes

    def _sign_legacy(self, client: SignatureRegistry, reference: Reference, digest: str) -> bool:
        assert self._key is not None
        tag = simple.signature_tag(digest)
        existing = client.get_manifest(reference.repository, tag)
        if existing and any(outcome.valid for outcome in legacy_outcomes(
                client, reference.repository, existing.body, digest, self._key.public)):
            return False
        payload = simple.payload(reference.cosign_name, digest)
        payload_blob = bytes_blob(simple.SIMPLE_SIGNING, payload)
        layer = simple.layer_descriptor(payload_blob, self._key.sign(payload),
                                        self._key.public.hint)
        client.push_blob(reference.repository, payload_blob)

        def merge(current: bytes | None) -> TagContent | None:
            merged = simple.with_signature_layer(current, layer)
            if merged is None:
                return None
            config, body = merged
            return TagContent(body, simple.OCI_MANIFEST, (config,))

        # add_to_tag reads the tag again rather than merging into ``existing``: verifying,
        # signing and the blob pushes lie between, and a signature another tool (CI's keyless
        # job, an operator's cosign) wrote meanwhile would be dropped by a write based on the
        # older read; those tools do not re-read and repair as our signers do.
        return add_to_tag(client, reference.repository, tag, merge,
                          settle_delay=self._settle_delay)

    def _sign_bundle(self, client: SignatureRegistry, reference: Reference,
                     subject: dict[str, object]) -> bool:
        assert self._key is not None
        digest = str(subject["digest"])
        if any(bundle_outcome(data, digest, self._key.public).valid
               for data in bundle_blobs(client, reference.repository, digest)):
            return False
        body = bundle_format.statement(digest)
        signature = self._key.sign(bundle_format.pae(bundle_format.IN_TOTO, body))
        attach_bundle(client, reference.repository, subject, bundle_format.make_bundle(
            body, signature, self._key.public.hint), settle_delay=self._settle_delay)
        return True


def attach_bundle(client: SignatureRegistry, repository: str, subject: dict[str, object],
                  bundle: bytes, *, settle_delay: Pause = jittered_settle) -> None:
    """Push a bundle as a referrer of ``subject``, plus the referrers tag schema index when
    the registry has no referrers API (it then does not answer with OCI-Subject)."""
    bundle_blob = bytes_blob(bundle_format.BUNDLE_TYPE, bundle)
    manifest = bundle_format.referrer_manifest(bundle_blob, dict(subject))
    client.push_blob(repository, bundle_format.EMPTY_BLOB)
    client.push_blob(repository, bundle_blob)
    _, registry_tracks = client.put_manifest(
        repository, bytes_blob(bundle_format.OCI_MANIFEST, manifest).digest, manifest,
        bundle_format.OCI_MANIFEST)
    if registry_tracks:
        return
    descriptor = bundle_format.referrer_descriptor(manifest)

    def merge(current: bytes | None) -> TagContent | None:
        index = bundle_format.with_referrer(current, descriptor)
        return None if index is None else TagContent(index, bundle_format.OCI_INDEX)

    add_to_tag(client, repository, bundle_format.referrers_tag(str(subject["digest"])), merge,
               settle_delay=settle_delay)
