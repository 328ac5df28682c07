"""Judging signatures: each one found is valid, by another key, over another digest, or
tampered; ``settle`` turns the findings into success or the most telling error.

Key hints (in the bundle, and promoter's own annotation on legacy layers) only name the
problem; whether a signature is accepted depends on the cryptographic check alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from promoter.signing import bundle as bundle_format
from promoter.signing import simple
from promoter.signing.errors import (
    SignatureForOtherDigest,
    SignedByOtherKey,
    TamperedSignature,
    UnsignedImage,
)
from promoter.signing.keys import PublicKey
from promoter.signing.registry import SignatureRegistry, readable_blob

Status = Literal["valid", "other_digest", "tampered", "other_key", "not_a_signature"]


@dataclass(frozen=True)
class Outcome:
    format: Literal["bundle", "legacy"]
    status: Status
    detail: str = ""

    @property
    def valid(self) -> bool:
        return self.status == "valid"


def _unverified(fmt: Literal["bundle", "legacy"], hint: str | None,
                key: PublicKey) -> Outcome:
    if hint == key.hint:
        return Outcome(fmt, "tampered", "made with this key, but the signed content was altered")
    if hint:
        return Outcome(fmt, "other_key", f"made with another key (hint {hint})")
    return Outcome(fmt, "other_key", "does not verify with this key (another key, or altered)")


def bundle_outcome(data: bytes, digest: str, key: PublicKey) -> Outcome:
    parsed = bundle_format.parse_bundle(data)
    if parsed is None or parsed.payload_type != bundle_format.IN_TOTO:
        return Outcome("bundle", "tampered", "the bundle is malformed")
    signed = bundle_format.pae(parsed.payload_type, parsed.body)
    if not any(key.verifies(signature, signed) for signature in parsed.signatures):
        return _unverified("bundle", parsed.key_hint, key)
    subjects = parsed.subject_digests()
    if digest not in subjects:
        return Outcome("bundle", "other_digest", f"signed {', '.join(subjects) or 'nothing'}")
    predicate = parsed.predicate_type()
    if predicate != bundle_format.PREDICATE_TYPE:
        # The same key may attest provenance or an SBOM about the image: a statement about
        # it, not the signature that vouches for deploying it.
        return Outcome("bundle", "not_a_signature", f"an attestation ({predicate}), not a "
                       "signature")
    return Outcome("bundle", "valid")


def legacy_outcomes(client: SignatureRegistry, repository: str, manifest_body: bytes,
                    digest: str, key: PublicKey) -> list[Outcome]:
    outcomes = []
    for layer in simple.signature_layers(manifest_body):
        signature = simple.decode_signature(layer)
        payload = readable_blob(client, repository, layer["digest"])  # checked: signature_layers
        if payload is None:  # gone, oversized or not its digest; outages still propagate
            outcomes.append(Outcome("legacy", "tampered",
                                    "the signed payload is missing or unreadable"))
            continue
        hint = (layer.get("annotations") or {}).get(simple.KEY_HINT_ANNOTATION)
        if signature is None:
            outcomes.append(Outcome("legacy", "tampered", "the signature annotation is damaged"))
        elif not key.verifies(signature, payload):
            outcomes.append(_unverified("legacy", hint, key))
        else:
            found = simple.LegacySignature(payload, signature, hint).signed_digest()
            outcomes.append(Outcome("legacy", "valid") if found == digest else
                            Outcome("legacy", "other_digest", f"signed {found}"))
    return outcomes


def settle(outcomes: list[Outcome], reference: str, key: PublicKey) -> list[str]:
    """The formats with a valid signature; raise the most specific error when none is."""
    good: list[str] = sorted({outcome.format for outcome in outcomes if outcome.valid})
    if good:
        return good
    attestations = [o.detail for o in outcomes if o.status == "not_a_signature"]
    outcomes = [o for o in outcomes if o.status != "not_a_signature"]
    if not outcomes:
        found = f" (found only {'; '.join(attestations)})" if attestations else ""
        raise UnsignedImage(f"{reference} is not signed: no cosign signature (bundle referrer "
                            f"or .sig tag) exists for this digest{found}",
                            hint="sign it with `promoter image sign REF@DIGEST --key cosign.key`")
    by_status = {outcome.status: outcome for outcome in outcomes}
    said = "; ".join(f"{o.format}: {o.detail}" for o in outcomes)
    if "other_digest" in by_status:
        raise SignatureForOtherDigest(
            f"{reference}: the signature found is valid but covers a different image digest "
            f"({said})", hint="a signature was copied from another image; sign this digest")
    if "tampered" in by_status:
        raise TamperedSignature(f"{reference}: the signature was altered after signing ({said})",
                                hint="do not deploy; re-sign the image from a trusted build")
    raise SignedByOtherKey(f"{reference} is signed, but not by the key {key.hint} ({said})",
                           hint="verify with the public key that matches the signing key")
