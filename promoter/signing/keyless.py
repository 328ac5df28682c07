"""Keyless signing (Sigstore): an ephemeral key, a Fulcio certificate for the CI identity in
``SIGSTORE_ID_TOKEN``, a Rekor entry, and a v3 bundle attached as an OCI referrer.

GitLab CI provides the token with ``id_tokens: {SIGSTORE_ID_TOKEN: {aud: sigstore}}``.
"""

from __future__ import annotations

import base64
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from promoter.errors import UserError
from promoter.ports.image import SignatureInfo, Sigstore
from promoter.signing import bundle as bundle_format
from promoter.signing.keys import SigningKey
from promoter.signing.registry import SignatureRegistry, subject_descriptor
from promoter.signing.service import attach_bundle, digest_reference


def token_identity(token: str) -> str:
    """The claim Fulcio asks the key to sign: email for email identities, else sub."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims.get("email") or claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise UserError("SIGSTORE_ID_TOKEN is not an OIDC identity token (JWT)",
                        hint="in GitLab CI: id_tokens: {SIGSTORE_ID_TOKEN: {aud: sigstore}}"
                        ) from None


def sign_keyless(client: SignatureRegistry, sigstore: Sigstore, token: str,
                 reference_text: str) -> SignatureInfo:
    reference = digest_reference(reference_text)
    digest = str(reference.digest)
    subject = subject_descriptor(client, reference.repository, digest)
    key = SigningKey(ec.generate_private_key(ec.SECP256R1()))
    public_pem = key.public.pem().decode()
    chain = sigstore.signing_certificate(token, public_pem,
                                         key.sign(token_identity(token).encode()))
    if not chain:
        raise UserError("Fulcio returned no certificate")
    body = bundle_format.statement(digest)
    signature = key.sign(bundle_format.pae(bundle_format.IN_TOTO, body))
    envelope = {"payload": base64.b64encode(body).decode(), "payloadType": bundle_format.IN_TOTO,
                "signatures": [{"sig": base64.b64encode(signature).decode()}]}
    tlog_entry = sigstore.log_dsse(json.dumps(envelope).encode(), chain[0])
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    bundle = {
        "mediaType": bundle_format.BUNDLE_TYPE,
        "verificationMaterial": {
            "certificate": {"rawBytes": base64.b64encode(
                leaf.public_bytes(serialization.Encoding.DER)).decode()},
            "tlogEntries": [tlog_entry]},
        "dsseEnvelope": envelope,
    }
    attach_bundle(client, reference.repository, subject,
                  json.dumps(bundle, separators=(",", ":")).encode())
    return SignatureInfo(f"{reference.name}@{digest}", digest, ["bundle"], key.public.hint,
                         ["bundle"])
