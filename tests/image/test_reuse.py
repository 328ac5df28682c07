"""Reuse of an image already at ``v<N>`` / ``modelcar-v<N>``: only one promoter pushed itself.

The source-inputs label is computable by anyone who can read the model registry, and anyone
who can push to the repository (every Developer and CI job on GitLab) can put an image of their
own at the tag carrying it. Promoter must build its own image rather than adopt (and then sign
and pin) theirs; an image promoter did push is still reused without downloading the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from promoter.adapters.oci import RegistryClient
from promoter.adapters.pip import PipInstaller
from promoter.core.lineage import checked_version, run_of
from promoter.image import modelcar
from promoter.image.builder import SOURCE_INPUTS_LABEL, source_inputs
from promoter.image.config import OCI_MANIFEST, config_blob, image_manifest
from promoter.image.existing import FOUND_NOTE
from promoter.image.layers import TAR, Layer, bytes_blob
from promoter.image.platform import parse_platform
from promoter.image.service import DaemonlessImageBuilder
from promoter.ports.image import CheckedVersion, ModelcarRequest
from promoter.service.composition.images import ModelImages, registry_clients
from promoter.service.composition.mlflow import adapter
from promoter.settings import Settings, load_settings
from tests.image.model import register_logged_model

pytestmark = pytest.mark.e2e
MODEL = "fraud"
LABELS = {"org.opencontainers.image.title": MODEL}  # what the pipeline's image step passes
NOT_OURS = "promoter has no record of pushing it: rebuilding"
REQUEST = ModelcarRequest(layout="mlflow", name=MODEL)


@dataclass(frozen=True)
class Registered:
    tracking: str
    artifacts: Path  # the model version's files, moved away to prove nothing is downloaded


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    """``fraud`` version 1 in a real MLflow registry (sqlite), with no dependency layer."""
    work = tmp_path_factory.mktemp("mlflow")
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    register_logged_model(work, tracking, "reuse", MODEL)
    yield Registered(tracking, work / "art")


def settings_for(registered: Registered, state: Path) -> Settings:
    return load_settings(None, environ={"PROMOTER_STATE_DIR": str(state),
                                        "MLFLOW_TRACKING_URI": registered.tracking})


def checked(settings: Settings) -> CheckedVersion:
    """Version 1 as the pipeline's policy step read it (what its image port is handed)."""
    registry = adapter(settings)
    info = registry.model_version(MODEL, "1")
    return checked_version(registry, info, run_of(registry, info))


def expected_serving_label(settings: Settings) -> str:
    """The label promoter looks for, computed from public facts as an attacker would."""
    lineage = adapter(settings).resolve_model(f"models:/{MODEL}/1")
    builder = DaemonlessImageBuilder(settings.image, settings.state_dir,
                                     registry_clients(settings), PipInstaller())
    with ExitStack() as stack:
        base, options = builder._prepare(None, [], stack)
    label = source_inputs(lineage, base, LABELS, options)
    assert label is not None
    return label


def expected_modelcar_label(settings: Settings) -> str:
    lineage = adapter(settings).resolve_model(f"models:/{MODEL}/1")
    label = modelcar.source_inputs(lineage, REQUEST, None, LABELS,
                                   parse_platform(settings.image.platform))
    assert label is not None
    return label


def push_foreign(registry: str, repository: str, tag: str, label: str) -> str:
    """Someone else's image at ``repository:tag`` claiming promoter's source inputs."""
    layer = bytes_blob(TAR, b"\0" * 1024)  # stands in for a malicious layer
    config = config_blob({"architecture": "amd64", "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
                          "config": {"Labels": {SOURCE_INPUTS_LABEL: label},
                                     "Entrypoint": ["/evil"]}})
    with RegistryClient(registry) as client:
        client.push_blob(repository, layer)
        client.push_blob(repository, config)
        digest, _ = client.put_manifest(repository, tag,
                                        image_manifest(config, [Layer(layer, layer.digest)]),
                                        OCI_MANIFEST)
    return digest


def tagged(registry: str, repository: str, tag: str) -> str:
    with RegistryClient(registry) as client:
        manifest = client.get_manifest(repository, tag)
    assert manifest is not None
    return manifest.digest


@contextmanager
def artifacts_moved_away(registered: Registered) -> Iterator[None]:
    """The model's files are gone meanwhile: a build that needs them fails, so one that
    succeeds read nothing but the registry."""
    registered.artifacts.rename(registered.artifacts.with_name("art-moved"))
    try:
        yield
    finally:
        registered.artifacts.with_name("art-moved").rename(registered.artifacts)


def test_a_foreign_image_claiming_the_inputs_is_rebuilt_not_adopted_and_ours_is_reused(
        registry: str, registered: Registered, tmp_path: Path) -> None:
    settings = settings_for(registered, tmp_path / "state")
    images = ModelImages(settings)  # the pipeline's image port
    foreign = push_foreign(registry, "reuse/fraud", "v1", expected_serving_label(settings))

    built = images.build(checked(settings), f"{registry}/reuse/fraud", LABELS)
    assert built.digest != foreign and foreign not in built.reference
    assert built.bytes_uploaded > 0  # promoter built and pushed its own image
    assert any(NOT_OURS in note and foreign in note for note in built.notes), built.notes
    assert tagged(registry, "reuse/fraud", "v1") == built.digest  # the tag is ours again
    config = json.loads(built_config(registry, "reuse/fraud", built.digest))
    assert config["config"].get("Entrypoint") != ["/evil"]

    # An image promoter pushed itself is reused from the registry alone: the model's files
    # are moved away to prove nothing is downloaded, and nothing is uploaded.
    with artifacts_moved_away(registered):
        again = images.build(checked(settings), f"{registry}/reuse/fraud", LABELS)
    assert (again.digest, again.bytes_uploaded) == (built.digest, 0)
    assert FOUND_NOTE in again.notes


def test_a_foreign_modelcar_claiming_the_inputs_is_rebuilt_not_adopted_and_ours_is_reused(
        registry: str, registered: Registered, tmp_path: Path) -> None:
    settings = settings_for(registered, tmp_path / "state")
    images = ModelImages(settings)
    foreign = push_foreign(registry, "reuse/fraud-car", "modelcar-v1",
                           expected_modelcar_label(settings))

    built = images.build_modelcar(checked(settings), f"{registry}/reuse/fraud-car", REQUEST,
                                  LABELS)
    assert built.digest != foreign and built.bytes_uploaded > 0
    assert any(NOT_OURS in note for note in built.notes), built.notes
    assert tagged(registry, "reuse/fraud-car", "modelcar-v1") == built.digest

    with artifacts_moved_away(registered):
        again = images.build_modelcar(checked(settings), f"{registry}/reuse/fraud-car", REQUEST,
                                      LABELS)
    assert (again.digest, again.bytes_uploaded) == (built.digest, 0)
    assert FOUND_NOTE in again.notes


def test_without_a_record_promoters_own_image_is_rebuilt_to_the_same_digest(
        registry: str, registered: Registered, tmp_path: Path) -> None:
    """Another replica, or a wiped cache: the miss costs a rebuild that sends no blob."""
    one = settings_for(registered, tmp_path / "one")
    two = settings_for(registered, tmp_path / "two")
    first = ModelImages(one).build(checked(one), f"{registry}/reuse/replicas", LABELS)
    other = ModelImages(two).build(checked(two), f"{registry}/reuse/replicas", LABELS)
    assert (other.digest, other.bytes_uploaded) == (first.digest, 0)
    assert any(NOT_OURS in note for note in other.notes), other.notes


def test_without_a_record_promoters_own_modelcar_is_rebuilt_sending_nothing(
        registry: str, registered: Registered, tmp_path: Path) -> None:
    """The modelcar twin: a replica without the state dir's layer record hashes the model's
    layer locally and finds it in the registry, rather than sending every byte again (many
    GB for an LLM)."""
    one = settings_for(registered, tmp_path / "one")
    two = settings_for(registered, tmp_path / "two")
    first = ModelImages(one).build_modelcar(checked(one), f"{registry}/reuse/car-replicas",
                                            REQUEST, LABELS)
    other = ModelImages(two).build_modelcar(checked(two), f"{registry}/reuse/car-replicas",
                                            REQUEST, LABELS)
    assert first.bytes_uploaded > 0
    assert (other.digest, other.bytes_uploaded) == (first.digest, 0)
    assert any(NOT_OURS in note for note in other.notes), other.notes


def built_config(registry: str, repository: str, digest: str) -> bytes:
    with RegistryClient(registry) as client:
        manifest = client.get_manifest(repository, digest)
        assert manifest is not None
        return client.get_blob(repository, json.loads(manifest.body)["config"]["digest"])
