"""Signers built from settings: what the CLI and the pipeline use."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from promoter.adapters.oci import client_for
from promoter.errors import UsageError, UserError
from promoter.image.reference import parse_reference
from promoter.ports.image import SignatureInfo
from promoter.settings import Settings
from promoter.signing import keys
from promoter.signing.service import CosignSigner


def cosign_signer(settings: Settings, *, private_key: Path | None = None,
                  public_key: Path | None = None, password: str = "",
                  formats: Sequence[str] | None = None) -> CosignSigner:
    """A key-based signer; keys default to image.signing_key / image.verification_key."""
    chosen = list(formats or settings.image.signature_formats)
    unknown = set(chosen) - {"bundle", "legacy"}
    if unknown:
        raise UsageError(f"signature formats are bundle and legacy, not "
                         f"{', '.join(sorted(unknown))}")
    private_key = private_key or settings.image.signing_key
    public_key = public_key or settings.image.verification_key
    signing = (keys.load_signing_key(keys.read_key_file(private_key), password,
                                     name=str(private_key)) if private_key else None)
    verifying = (keys.load_public_key(keys.read_key_file(public_key), name=str(public_key))
                 if public_key else None)
    return CosignSigner(lambda registry: contextlib.closing(client_for(registry, settings.image)),
                        signing_key=signing, public_key=verifying, formats=chosen)


def cosign_verifier(settings: Settings, public_key: Path) -> CosignSigner:
    """Verification only: loads the public key and never the signing key (which may be
    encrypted with a password this process does not have)."""
    verifying = keys.load_public_key(keys.read_key_file(public_key), name=str(public_key))
    return CosignSigner(lambda registry: contextlib.closing(client_for(registry, settings.image)),
                        public_key=verifying, formats=list(settings.image.signature_formats))


def sign_keyless_from_settings(settings: Settings, reference: str) -> SignatureInfo:
    from promoter.adapters.oci_keyless import SigstoreServices
    from promoter.signing.keyless import sign_keyless

    secret = settings.secret("SIGSTORE_ID_TOKEN")
    token = secret.reveal() if secret else ""
    if not token:
        raise UserError("keyless signing needs an OIDC identity token in SIGSTORE_ID_TOKEN",
                        hint="in GitLab CI add id_tokens: {SIGSTORE_ID_TOKEN: {aud: sigstore}} "
                             "to the job")
    services = SigstoreServices(settings.image.fulcio_url, settings.image.rekor_url)
    client = client_for(parse_reference(reference).api_host, settings.image)
    try:
        return sign_keyless(client, services, token, reference)
    finally:
        client.close()
        services.close()
