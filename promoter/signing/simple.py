"""cosign's legacy signature: a simple-signing payload stored under tag ``sha256-<hex>.sig``.

Byte formats follow sigstore/cosign specs/SIGNATURE_SPEC.md: compact JSON in Go's field order,
one manifest layer per signature carrying the base64 DER signature as an annotation.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from promoter.image.layers import Blob, bytes_blob
from promoter.image.reference import is_digest

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
# Not read by cosign: tells a verifier which key signed, to name "another key" precisely.
KEY_HINT_ANNOTATION = "dev.promoter/key-hint"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_TYPE = "cosign container image signature"


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def payload(docker_reference: str, digest: str,
            annotations: Mapping[str, str] | None = None) -> bytes:
    """Compact JSON, keys in the order Go's json.Marshal writes them."""
    critical = {"identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest}, "type": _TYPE}
    optional = dict(sorted(annotations.items())) if annotations else None
    return json.dumps({"critical": critical, "optional": optional},
                      separators=(",", ":")).encode()


@dataclass(frozen=True)
class LegacySignature:
    payload: bytes
    signature: bytes
    key_hint: str | None

    def signed_digest(self) -> str | None:
        try:
            data = json.loads(self.payload)
            if data["critical"]["type"] != _TYPE:
                return None
            return str(data["critical"]["image"]["docker-manifest-digest"])
        except (ValueError, KeyError, TypeError):
            return None


def layer_descriptor(payload_blob: Blob, signature: bytes, key_hint: str) -> dict[str, Any]:
    return {**payload_blob.descriptor(), "annotations": {
        SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(),
        KEY_HINT_ANNOTATION: key_hint}}


def config_blob(layer_digests: list[str]) -> Blob:
    """The config cosign writes for a signature image (exact field order matters)."""
    config = ('{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":'
              '"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":'
              + json.dumps(layer_digests, separators=(",", ":")) + '},"config":{}}')
    return bytes_blob(OCI_CONFIG, config.encode())


def manifest(layers: list[dict[str, Any]]) -> tuple[Blob, bytes]:
    """(config blob, manifest bytes) for a signature image holding ``layers``."""
    config = config_blob([str(layer["digest"]) for layer in layers])
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": config.descriptor(), "layers": layers},
                      separators=(",", ":")).encode()
    return config, body


def with_signature_layer(manifest_body: bytes | None,
                         layer: dict[str, Any]) -> tuple[Blob, bytes] | None:
    """(config blob, manifest) of the ``.sig`` image with ``layer`` added to the layers already
    there; None when that very signature is already listed."""
    layers = signature_layers(manifest_body) if manifest_body else []
    if any(_same_signature(existing, layer) for existing in layers):
        return None
    return manifest([*layers, layer])


def _same_signature(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    # Every key signs the same payload for a digest, so the payload digest alone does not tell
    # two signers' layers apart; the signature does (ECDSA signatures are randomised, too).
    signature = decode_signature(second)
    return signature is not None and first.get("digest") == second.get("digest") \
        and decode_signature(first) == signature


def signature_layers(manifest_body: bytes) -> list[dict[str, Any]]:
    """The signature layers of a ``.sig`` manifest. A layer whose digest is malformed is left
    out (never fetched, and dropped when signing rewrites the manifest): anyone who may push
    to the repository can write one, and no signature of ours is ever such a layer."""
    try:
        layers = json.loads(manifest_body).get("layers") or []
    except (ValueError, AttributeError):
        return []
    return [layer for layer in layers if isinstance(layer, dict)
            and layer.get("mediaType") == SIMPLE_SIGNING and is_digest(layer.get("digest"))]


def decode_signature(layer: Mapping[str, Any]) -> bytes | None:
    try:
        return base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION], validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError):
        return None

