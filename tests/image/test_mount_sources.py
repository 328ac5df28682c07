"""Where base layers come from when an image is pushed: mounted inside the target registry,
copied from any other one, against real distribution registries.

The target registry uses token auth whose token service, like GitLab's, leaves out of a token
the scopes for repositories the user may not reach (it does not refuse the request): a mount
from such a repository is answered 401 again after the token retry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from promoter.adapters.oci import OCI_MANIFEST, RegistryClient
from promoter.adapters.oci_auth import Credentials
from promoter.image.config import config_blob, image_manifest
from promoter.image.layers import Layer, bytes_blob, measure_tar
from promoter.image.modelcar_service import build_modelcar_image
from promoter.image.tarstream import entries_for_tree
from promoter.image_settings import ImageSettings
from promoter.ports.image import BuiltImage, ModelcarRequest
from tests.image.registry import running_registry
from tests.image.token_server import TokenIssuer, token_auth_config, token_service

pytestmark = pytest.mark.e2e
CI = Credentials("ci", "s3cret")
ADMIN = Credentials("admin", "adm1n")


class RepositoryScopedIssuer(TokenIssuer):
    """Grants ``ci`` only repositories under ``models/`` (``admin`` everything) and keeps every
    scope string asked for, so a test can tell whether a mount was tried."""

    def __init__(self) -> None:
        super().__init__({CI.username: CI.password, ADMIN.username: ADMIN.password})
        self.asked: list[str] = []

    def token(self, user: str, scopes: list[str]) -> str:
        self.asked.extend(scopes)
        granted = [scope for scope in scopes
                   if user == ADMIN.username or scope.split(":")[1].startswith("models/")]
        return super().token(user, granted)


@dataclass(frozen=True)
class Registries:
    target: str  # token auth, RepositoryScopedIssuer
    issuer: RepositoryScopedIssuer
    plain: str  # no auth: a base image's own registry (Docker Hub, say)


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    work = tmp_path_factory.mktemp("mount-registries")
    issuer = RepositoryScopedIssuer()
    (work / "token-ca.pem").write_bytes(issuer.cert_pem())
    with token_service(issuer) as realm, \
            running_registry(work / "target",
                             token_auth_config(realm, work / "token-ca.pem")) as target, \
            running_registry(work / "plain") as plain:
        yield Registries(target, issuer, plain)


@pytest.fixture(scope="module")
def base_layer(tmp_path_factory: pytest.TempPathFactory) -> Layer:
    files = tmp_path_factory.mktemp("base-files")
    (files / "bin").mkdir()
    (files / "bin" / "sh").write_bytes(os.urandom(64 * 1024))  # a layer of its own
    return measure_tar(entries_for_tree(files / "bin", "bin"), "base")


def push_base(client: RegistryClient, repository: str, layer: Layer) -> str:
    config = config_blob({"architecture": "amd64", "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                          "config": {"Cmd": ["sh"]}})
    client.push_blob(repository, layer.blob)
    client.push_blob(repository, config)
    digest, _ = client.put_manifest(repository, "1", image_manifest(config, [layer]),
                                    OCI_MANIFEST)
    return f"{client.registry}/{repository}@{digest}"


def build_car(registries: Registries, base: str, repository: str, model_dir: Path,
              state: Path) -> BuiltImage:
    def clients(host: str) -> RegistryClient:
        return RegistryClient(host, credentials=CI if host == registries.target else None)

    return build_modelcar_image(ImageSettings(modelcar_base=base), state, str(model_dir),
                                f"{registries.target}/{repository}",
                                ModelcarRequest(layout="mlflow", name="m"), models=None,
                                clients=clients)


def blob_bytes_sent_besides(built: BuiltImage, registries: Registries, repository: str) -> int:
    """The blob bytes of ``built`` that were not uploaded (mounted, or already there)."""
    with RegistryClient(registries.target, credentials=CI) as client:
        manifest = client.get_manifest(repository, built.digest)
        assert manifest is not None
        for digest in built.layers:
            assert client.blob_exists(repository, digest)
    return built.size - len(manifest.body) - built.bytes_uploaded


def test_a_base_on_another_registry_is_copied_not_mounted(
        registries: Registries, base_layer: Layer, model_dir: Path, tmp_path: Path) -> None:
    """The README's modelcar recipe (image.modelcar_base on Docker Hub, modelcars pushed to
    GitLab) failed with a misleading 401: promoter asked the target registry to mount the
    base's layers from a repository of that name on the target itself, which GitLab's token
    service gives no scope for."""
    with RegistryClient(registries.plain) as client:
        base = push_base(client, "library/sh", base_layer)
    asked_before = len(registries.issuer.asked)
    built = build_car(registries, base, "models/car-from-elsewhere", model_dir, tmp_path)
    assert built.layers[0] == base_layer.blob.digest
    # Every byte was sent: the base layer was streamed over from its own registry.
    assert blob_bytes_sent_besides(built, registries, "models/car-from-elsewhere") == 0
    # And no mount was tried: no token was asked for the base's repository name.
    assert not [scope for scope in registries.issuer.asked[asked_before:]
                if "library/sh" in scope]


def test_a_base_on_the_target_registry_is_still_mounted(
        registries: Registries, base_layer: Layer, model_dir: Path, tmp_path: Path) -> None:
    with RegistryClient(registries.target, credentials=CI) as client:
        base = push_base(client, "models/base", base_layer)
    built = build_car(registries, base, "models/car-beside-its-base", model_dir, tmp_path)
    assert built.layers[0] == base_layer.blob.digest
    assert blob_bytes_sent_besides(built, registries, "models/car-beside-its-base") \
        == base_layer.blob.size


def test_a_mount_the_registry_refuses_falls_back_to_an_upload(registries: Registries) -> None:
    """A mount is an optimisation: a 401 (or 403) answered to it, after the token retry, means
    no pull access on the source repository, not bad credentials; the blob is uploaded."""
    blob = bytes_blob("application/octet-stream", os.urandom(10_000))
    with RegistryClient(registries.target, credentials=ADMIN) as admin:
        admin.push_blob("vendor/private", blob)
    asked_before = len(registries.issuer.asked)
    with RegistryClient(registries.target, credentials=CI) as client:
        assert client.push_blob("models/fallback", blob, mount_from="vendor/private") \
            == blob.size
        assert client.blob_exists("models/fallback", blob.digest)
    # The mount was tried (its token asked for the source repository) and refused.
    assert any("vendor/private" in scope for scope in registries.issuer.asked[asked_before:])
