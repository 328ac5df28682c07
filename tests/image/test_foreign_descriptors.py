"""Digests read from a registry or a layout, and tags from the command line, are checked before
they become URLs or file paths. A real registry refuses to store a manifest with a malformed
digest, so a hostile one is played by an in-memory source that keeps the client contract."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from promoter.errors import PermanentError, UserError
from promoter.image.base import load_base
from promoter.image.config import OCI_MANIFEST
from promoter.image.existing import PushedImages, find_pushed
from promoter.image.layers import Blob
from promoter.image.layout import LayoutTarget
from promoter.image.platform import parse_platform
from promoter.image.reference import parse_reference
from promoter.signing.registry import bundle_blobs
from promoter.signing.verify import legacy_outcomes

TRAVERSAL = "sha256:../../../other/blobs/sha256:" + "0" * 64
GOOD = "sha256:" + "a" * 64
INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class _Manifest:
    body: bytes
    media_type: str
    digest: str


@dataclass
class _HostileRegistry:
    """Answers with the manifests a test sets and records every digest it is asked for."""

    manifests: dict[str, tuple[Any, str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    config: bytes = json.dumps({"rootfs": {"diff_ids": [GOOD]}}).encode()

    def get_manifest(self, repository: str, reference: str) -> _Manifest | None:
        self.asked.append(reference)
        if reference not in self.manifests:
            return None
        data, media_type = self.manifests[reference]
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return _Manifest(body, media_type, "sha256:" + hashlib.sha256(body).hexdigest())

    def get_blob(self, repository: str, digest: str, *, limit: int = 0) -> bytes:
        self.asked.append(digest)
        return self.config

    def blob_chunk_source(self, repository: str, digest: str) -> Callable[[], Iterator[bytes]]:
        self.asked.append(digest)
        return lambda: iter([b""])

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        return {"manifests": [{"digest": TRAVERSAL}]}


def _image(config: str = GOOD, layer: str = GOOD) -> dict[str, Any]:
    return {"mediaType": OCI_MANIFEST, "config": {"digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer, "size": 1}]}


@pytest.mark.parametrize(("manifests", "what"), [
    ({"v1": (_image(layer=TRAVERSAL), OCI_MANIFEST)}, "a layer descriptor of base image"),
    ({"v1": (_image(config=TRAVERSAL), OCI_MANIFEST)}, "the config descriptor of base image"),
    ({"v1": ({"manifests": [{"digest": TRAVERSAL, "platform": {
        "os": "linux", "architecture": "amd64"}}]}, INDEX)}, "the index of base image"),
])
def test_a_base_image_with_a_malformed_digest_is_refused_before_it_is_fetched(
        manifests: dict[str, tuple[dict[str, Any], str]], what: str) -> None:
    registry = _HostileRegistry(manifests)
    with pytest.raises(PermanentError, match=f"{what} r\\.io/base:v1 names an invalid digest "
                                             r"'sha256:\.\./\.\./\.\./other"):
        load_base(registry, parse_reference("r.io/base:v1"), parse_platform("linux/amd64"))
    assert TRAVERSAL not in registry.asked


INDEX_OF = {"manifests": [{"digest": GOOD, "platform": {"os": "linux",
                                                          "architecture": "amd64"}}]}


@pytest.mark.parametrize(("manifests", "config", "said"), [
    ({"v1": ({"mediaType": OCI_MANIFEST, "layers": []}, OCI_MANIFEST)}, None,
     "the manifest of base image r.io/base:v1 has no config descriptor"),
    ({"v1": (INDEX_OF, INDEX), GOOD: (INDEX_OF, INDEX)}, None,
     f"base image r.io/base:v1 lists another index ({GOOD}) for linux/amd64"),
    ({"v1": (b"<html>not json</html>", OCI_MANIFEST)}, None,
     "the manifest of base image r.io/base:v1 is not a JSON object"),
    ({"v1": ([1, 2], OCI_MANIFEST)}, None,
     "the manifest of base image r.io/base:v1 is not a JSON object"),
    ({"v1": (_image(), OCI_MANIFEST)}, b"[]",
     "the config of base image r.io/base:v1 is not a JSON object"),
    ({"v1": ({**_image(), "layers": "x"}, OCI_MANIFEST)}, None,
     "base image r.io/base:v1 names its layers in neither"),
    ({"v1": ({**_image(), "layers": [{"digest": GOOD}]}, OCI_MANIFEST)}, None,
     "a layer of base image r.io/base:v1 has no media type, size or diff_id"),
    ({"v1": (_image(), OCI_MANIFEST)}, json.dumps({"rootfs": {"diff_ids": [7]}}).encode(),
     "a layer of base image r.io/base:v1 has no media type, size or diff_id"),
    ({"v1": ({"manifests": 5}, INDEX)}, None,
     "base image r.io/base:v1 has no linux/amd64 image"),
], ids=["no-config", "nested-index", "not-json", "not-an-object", "config-not-an-object",
        "layers-not-a-list", "layer-without-size", "diff-id-not-a-string", "manifests-not-a-list"])
def test_a_malformed_base_image_is_a_named_error_not_a_crash(
        manifests: dict[str, tuple[Any, str]], config: bytes | None, said: str) -> None:
    """A damaged or hostile base answered with what the code indexed blindly: KeyError,
    TypeError or JSONDecodeError reached the CLI's last-resort handler (exit 3, "unexpected")."""
    registry = _HostileRegistry(manifests)
    if config is not None:
        registry.config = config
    with pytest.raises((PermanentError, UserError)) as refused:
        load_base(registry, parse_reference("r.io/base:v1"), parse_platform("linux/amd64"))
    assert said in refused.value.message


def test_an_existing_image_with_a_malformed_config_digest_is_refused(tmp_path: Path) -> None:
    registry = _HostileRegistry({"v1": (_image(config=TRAVERSAL), OCI_MANIFEST)})
    with pytest.raises(PermanentError, match=r"the config of image r\.io/m/x:v1 names an invalid"):
        find_pushed(registry, parse_reference("r.io/m/x"), "v1", "sha256:" + "b" * 64,
                    PushedImages(tmp_path))
    assert TRAVERSAL not in registry.asked


def test_signature_readers_skip_malformed_digests_without_fetching_them() -> None:
    """Anyone who may push can write the referrers index and the .sig tag; an entry with a
    malformed digest is never fetched and never one of ours, so it is skipped (the image then
    counts as unsigned: fails closed) rather than blocking verification and signing."""
    registry = _HostileRegistry()
    assert bundle_blobs(registry, "m/x", GOOD) == []
    signature_manifest = json.dumps({"layers": [{
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": TRAVERSAL,
        "annotations": {"dev.cosignproject.cosign/signature": "AAAA"}}]}).encode()
    assert legacy_outcomes(registry, "m/x", signature_manifest, GOOD,
                           key=None) == []  # type: ignore[arg-type]
    assert TRAVERSAL not in registry.asked


@dataclass
class _GarbageReferrersTag(_HostileRegistry):
    """No referrers API; its referrers tag holds ``body`` (a laxer registry stores anything)."""

    body: bytes = b""

    def get_manifest(self, repository: str, reference: str) -> _Manifest | None:
        self.asked.append(reference)
        return _Manifest(self.body, INDEX, "sha256:" + hashlib.sha256(self.body).hexdigest())

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        return None


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"manifests": "x"}',
                                  b'{"manifests": [1, "x", null]}'])
def test_a_referrers_tag_that_is_no_index_lists_no_signature(body: bytes) -> None:
    """Verify then reports the image unsigned (fails closed) instead of crashing; signing
    replaces such an index with one that lists its own referrer."""
    from promoter.signing import bundle as bundle_format

    assert bundle_blobs(_GarbageReferrersTag(body=body), "m/x", GOOD) == []
    descriptor = {"mediaType": OCI_MANIFEST, "digest": GOOD, "size": 1}
    replaced = json.loads(bundle_format.with_referrer(body, descriptor) or b"")
    assert replaced["manifests"] == [descriptor]
    assert bundle_format.bundle_layer_digests(body) == []


def test_a_layout_never_writes_a_blob_outside_itself(tmp_path: Path) -> None:
    layout = LayoutTarget(tmp_path / "layout")
    blob = Blob("application/octet-stream", "sha256:../../../escaped", 1, lambda: iter([b"x"]))
    with pytest.raises(PermanentError,
                       match=r"OCI layout \S+ names an invalid digest 'sha256:\.\./"):
        layout.push_blob(blob, origin=None)
    assert not list(tmp_path.glob("escaped*")) and not (tmp_path.parent / "escaped").exists()


def test_a_layout_stops_a_blob_that_streams_past_its_size(tmp_path: Path) -> None:
    """A base registry that keeps sending bytes is cut off at the layer's declared size
    (promoter reads base layers unlimited: they can be gigabytes), and leaves no file."""
    sent: list[int] = []

    def endless() -> Iterator[bytes]:
        while len(sent) < 10_000:  # bounded; the layout must stop long before
            sent.append(1)
            yield b"x" * 1024

    layout = LayoutTarget(tmp_path / "layout")
    with pytest.raises(UserError, match=f"blob {GOOD} is longer than its 4096 bytes"):
        layout.push_blob(Blob("application/octet-stream", GOOD, 4096, endless), origin=None)
    assert len(sent) == 5
    with pytest.raises(UserError, match="of a new layer is longer than its 4096 bytes"):
        layout.push_new_blob(Blob("application/octet-stream", "", 4096, endless))
    assert not [path for path in (tmp_path / "layout").rglob("*") if path.suffix == ".partial"]


@pytest.mark.parametrize("tag", ["../../other/manifests/x", "vé"])
def test_image_build_refuses_a_tag_outside_the_grammar_before_any_work(
        run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path, tag: str) -> None:
    # The repository is unreachable: without the check the build would fail there instead.
    code, _, err = run_cli("image", "build", str(tmp_path), "--repository", "127.0.0.1:9/m/x",
                           "--tag", tag)
    assert code == 1
    assert f"--tag: {tag!r} is not a valid image tag" in err
