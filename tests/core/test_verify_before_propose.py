"""The pipeline verifies the image's signature with the configured key before it proposes
anything: an unsigned image or one signed by another key opens no MR and is denied."""

from __future__ import annotations

from collections.abc import Sized

import pytest

from promoter.errors import PolicyDenied, TransientError, UserError
from promoter.ports.image import SignatureInfo
from tests.core.test_pipeline import MODEL, SETTINGS, MemorySteps, World


class KeyVerifier:
    """Accepts exactly the references signed by 'our' key (the signer double's records)."""

    def __init__(self, world: World, *, other_key: bool = False,
                 signed_in: str | None = None) -> None:
        self.world = world
        self.other_key = other_key
        self.signed_in = signed_in  # CI signed every image pushed under this prefix, and no other
        self.key_hint = "ourkeyhint000000"
        self.calls: list[str] = []

    def verify(self, reference_with_digest: str) -> SignatureInfo:
        self.calls.append(reference_with_digest)
        signed = self.world.signer.signed if self.world.signer is not None else []
        if self.signed_in is not None:
            signed = [reference_with_digest] if reference_with_digest.startswith(
                self.signed_in) else []
        if reference_with_digest not in signed:
            raise UserError(f"{reference_with_digest} has no signature")
        if self.other_key:
            raise UserError("signed, but by another key (not cosign.pub)")
        return SignatureInfo(reference_with_digest, reference_with_digest.split("@")[1],
                             ["bundle"], self.key_hint)


def test_a_signed_image_is_verified_and_the_mr_says_so(world: World) -> None:
    verifier = KeyVerifier(world)
    world.ports_extra = {"verifier": verifier}
    result = world.promote("2")
    assert result.outcome == "created" and verifier.calls == [result.image]
    assert result.signature is not None
    assert result.signature.startswith("signed (") and "; verified (bundle" in result.signature
    assert "verified \\(bundle" in world.provider.proposals[0].description  # markdown-escaped


@pytest.mark.parametrize(("signer", "other_key", "said"), [
    (None, False, "has no signature"),                      # nothing signed it
    ("ours", True, "signed, but by another key"),           # someone else's key
])
def test_unverifiable_images_are_denied_and_open_nothing(world: World, signer: str | None,
                                                         other_key: bool, said: str) -> None:
    if signer is None:
        world.signer = None  # type: ignore[assignment]  (signed elsewhere, or not at all)
    world.ports_extra = {"verifier": KeyVerifier(world, other_key=other_key)}
    with pytest.raises(PolicyDenied, match=said):
        world.promote("2")
    tags = world.registry.tags(MODEL, "2")
    assert tags["promoter.production.status"] == "denied"
    assert tags["promoter.production.reason"].startswith("signature: ")
    assert world.provider.proposals == [] and world.ledger.rows == {}


def test_a_rerun_reuses_the_recorded_verification(world: World) -> None:
    verifier = KeyVerifier(world)
    world.ports_extra = {"verifier": verifier}
    steps = MemorySteps()
    world.promote("2", steps=steps)
    world.promote("2", steps=steps)
    assert len(verifier.calls) == 1 and steps.results["verify"]["status"].startswith("verified")


def first_attempt_fails_after(world: World, step: str, calls: Sized) -> MemorySteps:
    """Attempt 1 gets through ``step`` (one call recorded in ``calls``), then the forge
    answers 502: the step's result stays recorded for the retry."""
    steps = MemorySteps()
    world.provider.lost_answers = 1
    with pytest.raises(TransientError):
        world.promote("2", steps=steps)
    assert len(calls) == 1 and step in steps.results
    return steps


def first_attempt_fails_after_verifying(world: World, verifier: KeyVerifier) -> MemorySteps:
    world.ports_extra = {"verifier": verifier}
    return first_attempt_fails_after(world, "verify", verifier.calls)


def test_a_retry_into_another_repository_verifies_there(world: World) -> None:
    """Between the attempts image.repository moved: the retry rebuilds the same bytes (same
    digest) into the new repository, where CI signed nothing. The verification recorded for
    the old repository must not vouch for it: the retry verifies again and is denied."""
    world.signer = None  # type: ignore[assignment]  (CI signs; only the verification key is set)
    verifier = KeyVerifier(world, signed_in="registry.test/")
    steps = first_attempt_fails_after_verifying(world, verifier)
    world.settings = SETTINGS.model_copy(update={"image": SETTINGS.image.model_copy(
        update={"repository": "registry2.test/models/{name}"})})
    with pytest.raises(PolicyDenied, match="has no signature"):
        world.run(requested="2", steps=steps)
    assert verifier.calls[-1].startswith("registry2.test/models/")
    assert verifier.calls[0].split("@")[1] == verifier.calls[1].split("@")[1]  # same digest
    assert world.provider.proposals == []


def test_a_retry_under_a_replaced_verification_key_verifies_again(world: World) -> None:
    """Between the attempts image.verification_key was replaced by a key that did not sign the
    image: what the old key verified says nothing about the new one."""
    verifier = KeyVerifier(world)
    steps = first_attempt_fails_after_verifying(world, verifier)
    verifier.key_hint, verifier.other_key = "newkeyhint111111", True
    with pytest.raises(PolicyDenied, match="signed, but by another key"):
        world.run(requested="2", steps=steps)
    assert len(verifier.calls) == 2 and world.provider.proposals == []


def test_a_verification_recorded_without_reference_and_key_is_not_reused(world: World) -> None:
    """A record written before the reference and key were kept (digest and status only) cannot
    say where or with what it verified: the retry verifies again, then keeps all three."""
    verifier = KeyVerifier(world)
    steps = first_attempt_fails_after_verifying(world, verifier)
    old = steps.results["verify"]
    steps.results["verify"] = {"digest": old["digest"], "status": old["status"]}
    result = world.run(requested="2", steps=steps)
    assert result.outcome == "created" and len(verifier.calls) == 2
    assert steps.results["verify"]["reference"] == result.image
    assert steps.results["verify"]["key_hint"] == "ourkeyhint000000"


class RotatingSigner:
    """A signer that is also its own verifier (no image.verification_key: the signing key's
    public half checks), whose key the operator can replace between attempts."""

    def __init__(self) -> None:
        self.key_hint = "oldkeyhint000000"
        self.signatures: set[tuple[str, str]] = set()  # (reference, key) in the registry
        self.sign_calls: list[tuple[str, str]] = []

    def sign(self, reference_with_digest: str) -> SignatureInfo:
        made = (reference_with_digest, self.key_hint)
        self.sign_calls.append(made)
        created = [] if made in self.signatures else ["bundle"]  # looks first, as cosign does
        self.signatures.add(made)
        return SignatureInfo(reference_with_digest, reference_with_digest.split("@")[1],
                             ["bundle"], self.key_hint, created)

    def verify(self, reference_with_digest: str) -> SignatureInfo:
        if (reference_with_digest, self.key_hint) not in self.signatures:
            raise UserError("signed, but by another key (not cosign.pub)")
        return SignatureInfo(reference_with_digest, reference_with_digest.split("@")[1],
                             ["bundle"], self.key_hint)


def first_attempt_fails_after_signing(world: World, signer: RotatingSigner) -> MemorySteps:
    world.signer = signer  # type: ignore[assignment]
    world.ports_extra = {"verifier": signer}
    return first_attempt_fails_after(world, "signature", signer.sign_calls)


def test_a_retry_under_a_replaced_signing_key_signs_with_the_new_key(world: World) -> None:
    """Between the attempts image.signing_key was replaced. The old key's recorded signature
    is not what the new key's public half verifies: reusing it denied the promotion for good.
    The retry signs with the new key, verifies and proposes."""
    signer = RotatingSigner()
    steps = first_attempt_fails_after_signing(world, signer)
    signer.key_hint = "newkeyhint111111"
    result = world.run(requested="2", steps=steps)
    assert result.outcome == "created" and result.signature is not None
    assert "key newkeyhint11" in result.signature
    assert [key for _, key in signer.sign_calls] == ["oldkeyhint000000", "newkeyhint111111"]
    assert steps.results["signature"]["key_hint"] == "newkeyhint111111"
    assert world.registry.tags(MODEL, "2")["promoter.production.status"] == "mr_opened"


def test_a_signature_recorded_without_its_key_is_made_again(world: World) -> None:
    """A record written before the key was kept cannot say which key signed: the retry signs
    again (a no-op in the registry under the same key) and then keeps the key."""
    signer = RotatingSigner()
    steps = first_attempt_fails_after_signing(world, signer)
    steps.results["signature"].pop("key_hint", None)
    result = world.run(requested="2", steps=steps)
    assert result.outcome == "created" and len(signer.sign_calls) == 2
    assert steps.results["signature"]["created"] == []  # nothing new written
    assert steps.results["signature"]["key_hint"] == "oldkeyhint000000"


def test_a_retry_under_the_same_signing_key_reuses_the_signature(world: World) -> None:
    signer = RotatingSigner()
    steps = first_attempt_fails_after_signing(world, signer)
    assert world.run(requested="2", steps=steps).outcome == "created"
    assert len(signer.sign_calls) == 1
