"""Two signers of one digest at the same time: neither signature may disappear from the tag
that lists them (legacy ``.sig`` manifest, referrers tag schema index), against a real registry.

The interleaving is forced with wrappers around the real registry client, never with sleeps.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from promoter.adapters.oci import Manifest, RegistryClient
from promoter.errors import TransientError
from promoter.image.layers import bytes_blob
from promoter.image.reference import parse_reference
from promoter.signing import bundle as bundle_format
from promoter.signing import simple
from promoter.signing.errors import SignedByOtherKey
from promoter.signing.keys import SigningKey, load_signing_key
from promoter.signing.service import CosignSigner
from tests.signing.conftest import PASSWORD, key_path

FORMATS = ["legacy", "bundle"]


@pytest.fixture(scope="module")
def keys() -> dict[int, SigningKey]:
    return {number: load_signing_key(key_path(number).read_bytes(), PASSWORD)
            for number in (1, 2)}


def no_settle() -> None:
    """The settle delay, skipped: each test decides itself what lands while a signer waits."""


def listing_tag(fmt: str, digest: str) -> str:
    return simple.signature_tag(digest) if fmt == "legacy" else bundle_format.referrers_tag(digest)


class HeldPut:
    """The slow signer's PUT of the tag, held back so that it lands at a chosen moment."""

    def __init__(self) -> None:
        self._put: Callable[[], object] | None = None

    def hold(self, put: Callable[[], object]) -> None:
        self._put = put

    def land(self) -> None:
        put, self._put = self._put, None
        if put is not None:
            put()


class SlowWriter(RegistryClient):
    """A signer that has read the tag and is about to write it while ``meanwhile`` (the other
    signer's whole sign) runs: its first PUT of the tag is held until then, unless the other
    signer lets it land earlier."""

    def __init__(self, registry: str, tag: str, held: HeldPut,
                 meanwhile: Callable[[], object], writes: list[str]) -> None:
        super().__init__(registry)
        self.tag, self.held, self.meanwhile, self.writes = tag, held, meanwhile, writes

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]:
        if reference != self.tag:
            return super().put_manifest(repository, reference, body, media_type)
        self.writes.append("slow")
        if self.writes.count("slow") > 1:
            return super().put_manifest(repository, reference, body, media_type)
        landed: list[tuple[str, bool]] = []
        self.held.hold(lambda: landed.append(RegistryClient.put_manifest(
            self, repository, reference, body, media_type)))
        self.meanwhile()
        self.held.land()
        return landed[0]


class FastWriter(RegistryClient):
    """The other signer: once it has written the tag, the slow signer's stale PUT lands before
    it reads the tag again (the settle delay outlasted the slow signer's write)."""

    def __init__(self, registry: str, tag: str, held: HeldPut, writes: list[str]) -> None:
        super().__init__(registry)
        self.tag, self.held, self.writes = tag, held, writes

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        if reference == self.tag and "fast" in self.writes:
            self.held.land()
        return super().get_manifest(repository, reference)

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]:
        if reference == self.tag:
            self.writes.append("fast")
        return super().put_manifest(repository, reference, body, media_type)


def verifies(image: str, key: SigningKey) -> list[str]:
    verifier = CosignSigner(RegistryClient, public_key=key.public)
    return verifier.verify(image).formats


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_signature_overwritten_by_a_concurrent_signer_is_written_again(
        image: str, keys: dict[int, SigningKey], fmt: str) -> None:
    """Slow reads the tag; fast reads, writes and settles; slow's stale write then drops
    fast's entry. Fast finds it gone when it looks again and adds it back to slow's list."""
    tag = listing_tag(fmt, str(parse_reference(image).digest))
    held = HeldPut()
    writes: list[str] = []
    fast = CosignSigner(lambda host: FastWriter(host, tag, held, writes),
                        signing_key=keys[2], formats=[fmt], settle_delay=no_settle)
    slow = CosignSigner(lambda host: SlowWriter(host, tag, held, lambda: fast.sign(image),
                                                writes),
                        signing_key=keys[1], formats=[fmt], settle_delay=no_settle)
    slow.sign(image)
    assert verifies(image, keys[1]) == [fmt]
    assert verifies(image, keys[2]) == [fmt]
    # Fast wrote again to repair; slow, finding its entry listed, did not rewrite the tag.
    assert writes == ["slow", "fast", "fast"]


class Clobbered(RegistryClient):
    """Every PUT of the tag is at once replaced by another writer's stale list."""

    def __init__(self, registry: str, tag: str, theirs: bytes, media_type: str,
                 writes: list[str]) -> None:
        super().__init__(registry)
        self.tag, self.theirs, self.media_type, self.writes = tag, theirs, media_type, writes

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]:
        result = super().put_manifest(repository, reference, body, media_type)
        if reference == self.tag:
            self.writes.append("ours")
            super().put_manifest(repository, reference, self.theirs, self.media_type)
        return result


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tag_that_keeps_losing_our_signature_is_a_transient_error(
        image: str, keys: dict[int, SigningKey], fmt: str) -> None:
    CosignSigner(RegistryClient, signing_key=keys[1], formats=[fmt]).sign(image)
    reference = parse_reference(image)
    tag = listing_tag(fmt, str(reference.digest))
    with RegistryClient(reference.registry) as client:
        theirs = client.get_manifest(reference.repository, tag)
    assert theirs is not None
    writes: list[str] = []
    signer = CosignSigner(lambda host: Clobbered(host, tag, theirs.body, theirs.media_type,
                                                 writes),
                          signing_key=keys[2], formats=[fmt], settle_delay=no_settle)
    with pytest.raises(TransientError, match=f"{tag} lost our entry after each of 5 writes"):
        signer.sign(image)
    assert writes == ["ours"] * 5
    # Never reported signed, and the other signer's entry was kept on every write.
    assert verifies(image, keys[1]) == [fmt]
    with pytest.raises(SignedByOtherKey):
        verifies(image, keys[2])


def _layer(payload: bytes, signature: bytes) -> dict[str, Any]:
    return simple.layer_descriptor(bytes_blob(simple.SIMPLE_SIGNING, payload), signature, "hint")


def test_legacy_merge_keeps_other_signatures_and_never_lists_ours_twice() -> None:
    digest = "sha256:" + "a" * 64
    payload = simple.payload("registry.example/models/fraud", digest)
    # Every key signs the same payload: the two layers differ only in their signature.
    theirs, ours = _layer(payload, b"their signature"), _layer(payload, b"our signature")
    _, current = simple.manifest([theirs])
    merged = simple.with_signature_layer(current, ours)
    assert merged is not None
    config, body = merged
    layers = json.loads(body)["layers"]
    assert [base64.b64decode(layer["annotations"][simple.SIGNATURE_ANNOTATION])
            for layer in layers] == [b"their signature", b"our signature"]
    assert config.chunks is not None
    assert json.loads(b"".join(config.chunks()))["rootfs"]["diff_ids"] == [theirs["digest"]] * 2
    assert simple.with_signature_layer(body, ours) is None
    assert simple.with_signature_layer(None, ours) is not None
