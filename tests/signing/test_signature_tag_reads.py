"""How often signing reads the legacy ``.sig`` tag, counted on the wire against a real registry.

The signer reads the tag once to see whether it already signed and merges its signature into
that read; it reads again only after its own write, to put its entry back if a concurrent
writer dropped it (promoter.signing.tags). A second GET right after the first costs a round
trip and re-reads what was just read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from promoter.adapters.oci import RegistryClient
from promoter.image.reference import parse_reference
from promoter.signing import simple
from promoter.signing.keys import load_signing_key
from promoter.signing.service import CosignSigner
from tests.signing.conftest import PASSWORD, key_path

pytestmark = pytest.mark.e2e


class CountingClient(RegistryClient):
    """The real registry client; every HTTP request it sends is recorded as (method, path)."""

    def __init__(self, registry: str, sent: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(registry, **kwargs)
        self._http.event_hooks["request"].append(
            lambda request: sent.append((request.method, urlsplit(str(request.url)).path)))


def no_settle() -> None:
    """The settle delay, skipped: nothing else writes the tag in this test."""


def test_signing_reads_the_sig_tag_once_before_writing_and_once_after(image: str) -> None:
    sent: list[tuple[str, str]] = []
    signer = CosignSigner(lambda host: CountingClient(host, sent),
                          signing_key=load_signing_key(key_path(1).read_bytes(), PASSWORD),
                          formats=["legacy"], settle_delay=no_settle)
    reference = parse_reference(image)
    tag_path = (f"/v2/{reference.repository}/manifests/"
                f"{simple.signature_tag(str(reference.digest))}")

    assert signer.sign(image).created == ["legacy"]
    # read (no tag yet), write, re-read (the lost-update check)
    assert [method for method, path in sent if path == tag_path] == ["GET", "PUT", "GET"]

    sent.clear()
    assert signer.sign(image).created == []         # already signed: one read, no write
    assert [method for method, path in sent if path == tag_path] == ["GET"]
    with httpx.Client() as plain:                   # and the signature is there
        listed = plain.get(f"http://{reference.registry}{tag_path}", headers={
            "Accept": simple.OCI_MANIFEST})
    assert len(simple.signature_layers(listed.content)) == 1
