"""cosign v3 signatures: a Sigstore bundle v0.3 (DSSE, in-toto statement) as an OCI referrer.

Registries without the referrers API (distribution 2.8) get the referrers tag schema: an
OCI index under tag ``sha256-<hex>`` listing every referrer manifest of that digest.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from typing import Any

from promoter.image.layers import Blob, bytes_blob

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_BLOB = bytes_blob(EMPTY_TYPE, b"{}")


def referrers_tag(digest: str) -> str:
    return digest.replace(":", "-")


def statement(digest: str) -> bytes:
    algorithm, _, hex_digest = digest.partition(":")
    return json.dumps({"_type": STATEMENT_TYPE, "subject": [{"digest": {algorithm: hex_digest}}],
                       "predicateType": PREDICATE_TYPE, "predicate": {}},
                      separators=(",", ":")).encode()


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def make_bundle(body: bytes, signature: bytes, key_hint: str) -> bytes:
    bundle = {
        "mediaType": BUNDLE_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint}, "tlogEntries": []},
        "dsseEnvelope": {"payload": base64.b64encode(body).decode(), "payloadType": IN_TOTO,
                         "signatures": [{"sig": base64.b64encode(signature).decode()}]},
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ParsedBundle:
    key_hint: str | None
    payload_type: str
    body: bytes
    signatures: list[bytes]

    @functools.cached_property
    def statement(self) -> dict[str, Any]:
        """The signed in-toto statement, parsed once; empty when it is none."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) and data.get("_type") == STATEMENT_TYPE else {}

    def predicate_type(self) -> str | None:
        """The statement's predicateType: cosign's signature, or an attestation's (SLSA
        provenance, an SBOM…), which says something about the image but does not sign it."""
        value = self.statement.get("predicateType")
        return value if isinstance(value, str) else None

    def subject_digests(self) -> list[str]:
        try:
            return [f"{algorithm}:{value}" for subject in self.statement.get("subject", [])
                    for algorithm, value in subject.get("digest", {}).items()]
        except (AttributeError, TypeError):
            return []


def parse_bundle(data: bytes) -> ParsedBundle | None:
    try:
        bundle = json.loads(data)
        envelope = bundle["dsseEnvelope"]
        hint = (bundle.get("verificationMaterial") or {}).get("publicKey", {}).get("hint")
        return ParsedBundle(hint, str(envelope["payloadType"]),
                            base64.b64decode(envelope["payload"], validate=True),
                            [base64.b64decode(item["sig"], validate=True)
                             for item in envelope.get("signatures", [])])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return None


def referrer_manifest(bundle_blob: Blob, subject: dict[str, Any]) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_TYPE,
        "config": EMPTY_BLOB.descriptor(),
        "layers": [bundle_blob.descriptor()],
        "subject": subject,
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope",
                        "dev.sigstore.bundle.predicateType": PREDICATE_TYPE},
    }, separators=(",", ":")).encode()


def referrer_descriptor(manifest_body: bytes) -> dict[str, Any]:
    blob = bytes_blob(OCI_MANIFEST, manifest_body)
    data = json.loads(manifest_body)
    return {**blob.descriptor(), "artifactType": data.get("artifactType"),
            "annotations": data.get("annotations", {})}


def with_referrer(index_body: bytes | None, descriptor: dict[str, Any]) -> bytes | None:
    """The referrers tag index with ``descriptor`` added; None when already listed."""
    # An unreadable index is replaced: it can only ever list referrers.
    index = (index_document(index_body) if index_body else {}) or {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    manifests = [item for item in index.get("manifests") or [] if isinstance(item, dict)]
    if any(item.get("digest") == descriptor["digest"] for item in manifests):
        return None
    index["manifests"] = [*manifests, descriptor]
    return json.dumps(index, separators=(",", ":")).encode()


def bundle_layer_digests(manifest_body: bytes) -> list[str]:
    try:
        data = json.loads(manifest_body)
    except ValueError:
        return []
    layers = data.get("layers") if isinstance(data, dict) else None
    return [str(layer["digest"]) for layer in layers if isinstance(layer, dict)
            and layer.get("mediaType") == BUNDLE_TYPE and "digest" in layer] \
        if isinstance(layers, list) else []


def index_document(body: bytes) -> dict[str, Any]:
    """A referrers index, or empty when the bytes are none (anyone who may push to the
    repository can write the referrers tag: garbage there hides no signature of ours, it only
    lists none)."""
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(document, dict) or not isinstance(document.get("manifests", []), list):
        return {}
    return document
