"""Distinct, clear errors for every way a key or a signature can be wrong."""

from __future__ import annotations

from promoter.errors import TransientError, UserError


class KeyFileError(UserError):
    """Base for key file problems."""


class WrongKeyPassword(KeyFileError):
    kind = "wrong_password"


class CorruptKey(KeyFileError):
    kind = "corrupt_key"


class SignatureProblem(UserError):
    """Base for verification failures; the CLI exits 1 for each."""

    kind = "signature_invalid"


class UnsignedImage(SignatureProblem):
    kind = "unsigned"


class SignedByOtherKey(SignatureProblem):
    kind = "other_key"


class SignatureForOtherDigest(SignatureProblem):
    kind = "other_digest"


class TamperedSignature(SignatureProblem):
    kind = "tampered"


class KeylessUnavailable(TransientError):
    kind = "keyless_unavailable"
