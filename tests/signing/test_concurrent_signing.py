"""Two signers of one digest at the same time: neither signature may disappear from the tag
that lists them (legacy ``.sig`` manifest, referrers tag schema index), against a real registry.

The interleaving is forced with wrappers around the real registry client, never with sleeps.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from promoter.image.layers import bytes_blob
from promoter.signing import simple


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
