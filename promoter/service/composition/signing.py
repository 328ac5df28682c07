"""Signers and verifiers built from settings: cosign keys, registry clients, Sigstore.

Verifying builds only a verifier: it reads the public key and never the signing key, so
`promoter image verify` works where the private key (or COSIGN_PASSWORD) is not available.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from promoter.errors import UsageError, UserError
from promoter.image.reference import parse_reference
from promoter.ports.image import SignatureInfo
from promoter.service.composition.images import registry_clients
from promoter.settings import Settings
from promoter.signing import keys
from promoter.signing.service import CosignSigner

SIGNATURE_FORMATS = ("bundle", "legacy")


def _formats(settings: Settings, formats: Sequence[str] | None) -> list[str]:
    chosen = list(formats or settings.image.signature_formats)
    unknown = set(chosen) - set(SIGNATURE_FORMATS)
    if unknown:
        raise UsageError(f"signature formats are bundle and legacy, not "
                         f"{', '.join(sorted(unknown))}")
    return chosen


def cosign_signer(settings: Settings, *, private_key: Path | None = None, password: str = "",
                  formats: Sequence[str] | None = None) -> CosignSigner:
    """A key-based signer; the key defaults to image.signing_key. It also verifies, with the
    signing key's public half."""
    chosen = _formats(settings, formats)
    private_key = private_key or settings.image.signing_key
    if private_key is None:
        raise UsageError("signing needs a private key: pass --key cosign.key or set "
                         "image.signing_key")
    signing = keys.load_signing_key(keys.read_key_file(private_key), password,
                                    name=str(private_key))
    return CosignSigner(registry_clients(settings), signing_key=signing, formats=chosen)


def cosign_verifier(settings: Settings, *, public_key: Path | None = None) -> CosignSigner:
    """A verifier for one public key (default image.verification_key). Only the public key is
    read: the configured signing key, and COSIGN_PASSWORD, play no part in verifying."""
    public_key = public_key or settings.image.verification_key
    if public_key is None:
        raise UsageError("verify needs --key cosign.pub (or image.verification_key)")
    verifying = keys.load_public_key(keys.read_key_file(public_key), name=str(public_key))
    return CosignSigner(registry_clients(settings), public_key=verifying,
                        formats=_formats(settings, None))


def sign_keyless(settings: Settings, reference: str) -> SignatureInfo:
    """Sigstore keyless signing with the CI's OIDC token (SIGSTORE_ID_TOKEN)."""
    from promoter.adapters.oci_keyless import SigstoreServices
    from promoter.signing.keyless import sign_keyless as sign

    secret = settings.secret("SIGSTORE_ID_TOKEN")
    token = secret.reveal() if secret else ""
    if not token:
        raise UserError("keyless signing needs an OIDC identity token in SIGSTORE_ID_TOKEN",
                        hint="in GitLab CI add id_tokens: {SIGSTORE_ID_TOKEN: {aud: sigstore}} "
                             "to the job")
    services = SigstoreServices(settings.image.fulcio_url, settings.image.rekor_url)
    try:
        with registry_clients(settings)(parse_reference(reference).api_host) as client:
            return sign(client, services, token, reference)
    finally:
        services.close()
