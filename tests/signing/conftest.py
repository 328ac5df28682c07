"""Fixtures for signing tests: the real cosign keys, a real registry and small images in it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from promoter.adapters.oci import RegistryClient
from promoter.image.layers import bytes_blob
from tests.image.registry import running_registry

DATA = Path(__file__).parent / "data"
PASSWORD = "hello"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def key_path(number: int, kind: str = "key") -> Path:
    return DATA / f"real-cosign-{number}.{kind}"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def push_image(registry: str, repository: str, content: str) -> str:
    """A small real image (one config, one layer); returns REGISTRY/REPO@sha256:…"""
    with RegistryClient(registry) as client:
        layer = bytes_blob("application/vnd.oci.image.layer.v1.tar", content.encode().ljust(
            1024, b"\0"))
        config = bytes_blob("application/vnd.oci.image.config.v1+json", json.dumps(
            {"architecture": "amd64", "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}).encode())
        client.push_blob(repository, layer)
        client.push_blob(repository, config)
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": config.descriptor(),
                           "layers": [layer.descriptor()]}).encode()
        digest, _ = client.put_manifest(repository, "latest", body, OCI_MANIFEST)
    return f"{registry}/{repository}@{digest}"


@pytest.fixture
def image(registry: str, request: pytest.FixtureRequest) -> str:
    """A fresh image per test (its own repository, so signatures never mix)."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")
    return push_image(registry, f"signing/{name[:60].strip('-')}", os.urandom(8).hex())


@pytest.fixture
def promoter(run_cli: Callable[..., tuple[int, str, str]],
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    return run_cli
