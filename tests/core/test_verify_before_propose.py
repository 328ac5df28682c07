"""The pipeline verifies the image's signature with the configured key before it proposes
anything: an unsigned image or one signed by another key opens no MR and is denied."""

from __future__ import annotations

import pytest

from promoter.errors import PolicyDenied, UserError
from promoter.ports.image import SignatureInfo
from tests.core.test_pipeline import MODEL, World


class KeyVerifier:
    """Accepts exactly the references signed by 'our' key (the signer double's records)."""

    def __init__(self, world: World, *, other_key: bool = False) -> None:
        self.world = world
        self.other_key = other_key
        self.calls: list[str] = []

    def verify(self, reference_with_digest: str) -> SignatureInfo:
        self.calls.append(reference_with_digest)
        signed = self.world.signer.signed if self.world.signer is not None else []
        if reference_with_digest not in signed:
            raise UserError(f"{reference_with_digest} has no signature")
        if self.other_key:
            raise UserError("signed, but by another key (not cosign.pub)")
        return SignatureInfo(reference_with_digest, reference_with_digest.split("@")[1],
                             ["bundle"], "ourkeyhint000000")


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
    from tests.core.test_pipeline import MemorySteps
    steps = MemorySteps()
    world.promote("2", steps=steps)
    world.promote("2", steps=steps)
    assert len(verifier.calls) == 1 and steps.results["verify"]["status"].startswith("verified")
