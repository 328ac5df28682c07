from __future__ import annotations

import pytest

from promoter.errors import PermanentError, UserError
from promoter.image.layers import LayerOrigin
from promoter.image.reference import (
    check_digest,
    check_tag,
    is_loopback_registry,
    parse_reference,
    same_registry,
)
from promoter.image.targets import mount_source

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), [
    ("127.0.0.1:5000/models/fraud", "127.0.0.1:5000", "models/fraud", None, None),
    ("localhost/models/fraud:v7", "localhost", "models/fraud", "v7", None),
    (f"registry.gitlab.com/ml/fraud@{DIGEST}", "registry.gitlab.com", "ml/fraud", None, DIGEST),
    (f"ghcr.io/o/r:1.0@{DIGEST}", "ghcr.io", "o/r", "1.0", DIGEST),
    ("python:3.11-slim", "docker.io", "library/python", "3.11-slim", None),
    ("bitnami/python", "docker.io", "bitnami/python", None, None),
])
def test_references_parse_like_docker(text: str, registry: str, repository: str,
                                      tag: str | None, digest: str | None) -> None:
    reference = parse_reference(text)
    assert (reference.registry, reference.repository, reference.tag, reference.digest) == (
        registry, repository, tag, digest)
    assert str(reference) in (text, f"docker.io/{text}", f"docker.io/library/{text}")


@pytest.mark.parametrize("tag", ["v7", "V1_2.3-rc", "_x", "7", "a" * 128])
def test_tags_of_the_distribution_grammar_are_accepted(tag: str) -> None:
    assert check_tag(tag, "--tag") == tag
    assert parse_reference(f"r.io/a/b:{tag}").tag == tag


@pytest.mark.parametrize("tag", [
    "vé",                        # Unicode letters are word characters, not tag characters
    "v\u0661\u0662",             # Arabic-Indic digits likewise
    "../../other/manifests/x",   # would retarget /v2/<repo>/manifests/<tag>
    ".hidden", "-x", "a" * 129, "v1\n", "",
])
def test_tags_outside_the_ascii_grammar_are_refused(tag: str) -> None:
    with pytest.raises(UserError, match=r"--tag: .* is not a valid image tag") as refused:
        check_tag(tag, "--tag")
    assert "ASCII" in str(refused.value.hint)


@pytest.mark.parametrize("text", ["reg.io/a/b:vé", "reg.io/a/b:v\u0661", "reg.io/a/b:.x"])
def test_references_with_non_ascii_or_malformed_tags_are_refused(text: str) -> None:
    with pytest.raises(UserError, match=r"image reference '.+': '.+' is not a valid image tag"):
        parse_reference(text)


def test_descriptor_digests_are_checked_before_use() -> None:
    assert check_digest(DIGEST, "a layer") == DIGEST
    for bad in ["sha256:../../other/blobs/x", "sha256:" + "A" * 64, "sha512:" + "a" * 128,
                DIGEST + "\n", None, 7]:
        with pytest.raises(PermanentError, match="a layer of b names an invalid digest"):
            check_digest(bad, "a layer of b")


def test_docker_hub_is_reached_at_its_api_host() -> None:
    assert parse_reference("python:3.11").api_host == "registry-1.docker.io"


@pytest.mark.parametrize("text", ["127.0.0.1:5000/Models/x", "r.io/x@sha256:abc",
                                  "r.io/x:bad tag", "r.io/", "r.io/foo\n/bar:v1",
                                  "r.io/models/fraud-detector\n", " r.io/x:v1"])
def test_bad_references_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(UserError, match="image reference"):
        parse_reference(text)


@pytest.mark.parametrize(("registry", "loopback"), [
    ("127.0.0.1:5000", True), ("127.0.0.2", True), ("localhost:5000", True),
    ("localhost", True), ("[::1]:5000", True), ("[::1]", True),
    ("registry.gitlab.com", False), ("10.0.0.1:5000", False), ("[2001:db8::1]:5000", False),
    # Names that only look like loopback addresses resolve wherever their DNS says.
    ("127.evil.example.com", False), ("127.0.0.1.nip.io:5000", False),
    ("localhost.evil.example", False),
])
def test_only_loopback_registries_default_to_plain_http(registry: str, loopback: bool) -> None:
    assert is_loopback_registry(registry) is loopback


def test_bracketed_ipv6_registries_parse() -> None:
    reference = parse_reference("[::1]:5000/models/fraud:v7")
    assert (reference.registry, reference.repository, reference.tag) == (
        "[::1]:5000", "models/fraud", "v7")


def test_plain_http_only_for_loopback_and_listed_registries() -> None:
    from promoter.adapters.oci import RegistryClient

    with RegistryClient("registry.internal:5000") as client:
        assert client.base_url == "https://registry.internal:5000"
    with RegistryClient("registry.internal:5000",
                        insecure_registries=["registry.internal:5000"]) as client:
        assert client.base_url == "http://registry.internal:5000"
    with RegistryClient("localhost:5000") as client:
        assert client.base_url == "http://localhost:5000"
    with RegistryClient("[::1]:5000") as client:
        assert client.base_url == "http://[::1]:5000"
    with RegistryClient("127.evil.example.com") as client:
        assert client.base_url == "https://127.evil.example.com"


def test_cosign_names_docker_hub_as_go_containerregistry_does() -> None:
    assert parse_reference("python:3.11").cosign_name == "index.docker.io/library/python"
    assert parse_reference("127.0.0.1:5000/m/x").cosign_name == "127.0.0.1:5000/m/x"


@pytest.mark.parametrize(("base", "target", "mounted_from"), [
    # Docker Hub's names are one registry, however a reference spells it.
    ("busybox", "docker.io/ml/car", "library/busybox"),
    ("index.docker.io/library/busybox", "registry-1.docker.io/ml/car", "library/busybox"),
    ("Registry.GitLab.com/ml/base:1", "registry.gitlab.com/ml/car", "ml/base"),
    ("127.0.0.1:5000/bases/sh", "127.0.0.1:5000/models/car", "bases/sh"),
    # Another registry: nothing to mount from, the layer is copied.
    ("busybox", "registry.gitlab.com/ml/car", None),
    ("quay.io/library/busybox", "registry.gitlab.com/library/busybox", None),
    ("127.0.0.1:5000/bases/sh", "127.0.0.1:5001/bases/sh", None),
    ("r.example/bases/sh", "r.example:443/models/car", None),  # not assumed the same
])
def test_a_base_layer_is_mounted_only_from_the_target_registry(
        base: str, target: str, mounted_from: str | None) -> None:
    base_ref, target_ref = parse_reference(base), parse_reference(target)
    origin = LayerOrigin(base_ref.registry, base_ref.repository)
    assert mount_source(origin, target_ref) == mounted_from
    assert same_registry(base_ref.registry, target_ref.registry) == (mounted_from is not None)
    assert mount_source(None, target_ref) is None
