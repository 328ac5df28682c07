"""Where the model and the base come from: MLflow URIs, base images by reference, errors."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promoter.adapters.oci import RegistryClient
from promoter.errors import PermanentError
from promoter.image.layers import bytes_blob
from tests.image.model import SMALL_REQUIREMENTS
from tests.image.oracles import skopeo_copy_to_layout, skopeo_inspect, umoci_unpack
from tests.image.registry import free_port

pytestmark = pytest.mark.e2e
Run = Callable[..., tuple[int, str, str]]
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _build(promoter: Run, *args: str) -> dict[str, Any]:
    code, out, err = promoter("image", "build", *args, "--output", "json")
    assert code == 0, err
    return dict(json.loads(out))


def test_models_uri_is_downloaded_and_its_lineage_labelled(
        promoter: Run, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    features, target = load_iris(return_X_y=True)
    with _use_tracking_uri(tracking):  # scoped: other tests keep their own tracking URI
        experiment = mlflow.create_experiment("image",
                                              artifact_location=(tmp_path / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.sklearn.log_model(
                DecisionTreeClassifier(random_state=0).fit(features, target), name="model",
                registered_model_name="fraud-detector", serialization_format="pickle")
    for requirements in (tmp_path / "art").rglob("requirements.txt"):
        requirements.write_text(SMALL_REQUIREMENTS)  # keep the dependency layer small
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    built = _build(promoter, "models:/fraud-detector/1", "--repository",
                   f"{registry}/models/fraud-detector")
    assert built["tag"] == "v1"
    labels = skopeo_inspect(f"{registry}/models/fraud-detector:v1")["Labels"]
    assert labels["io.promoter.model.name"] == "fraud-detector"
    assert labels["io.promoter.model.version"] == "1"
    assert labels["io.promoter.model.run-id"] == run.info.run_id
    assert labels["io.promoter.model.source"] == "models:/fraud-detector/1"
    # The image records its inputs: a rebuild of the same version is recognised from the
    # registry alone, without downloading the model (its files are moved away to prove it).
    (tmp_path / "art").rename(tmp_path / "art-moved")
    again = _build(promoter, "models:/fraud-detector/1", "--repository",
                   f"{registry}/models/fraud-detector")
    assert again["digest"] == built["digest"] and again["bytes_uploaded"] == 0
    assert any("nothing downloaded" in note for note in again["notes"])
    (tmp_path / "art-moved").rename(tmp_path / "art")
    code, _, err = promoter("image", "build", "models:/fraud-detector/9", "--repository",
                            f"{registry}/models/fraud-detector")
    assert code == 1 and "fraud-detector" in err and "Traceback" not in err


ATTESTATION = {"os": "unknown", "architecture": "unknown"}  # BuildKit's, in many indexes


def _push_base(client: RegistryClient, repository: str,
               platforms: tuple[dict[str, str], ...] = ({"architecture": "arm64"},
                                                        {"architecture": "amd64"}),
               ) -> dict[str, tuple[str, str]]:
    """A multi-platform base (Docker media types, as Docker Hub serves), listed in the order
    given, whose one file /etc/base-release names its platform; configs name no variant, as
    many do. Returns platform (os/arch[/variant]) → (layer digest, manifest digest)."""
    pushed: dict[str, tuple[str, str]] = {}
    entries = []
    for declared in platforms:
        platform = {"os": "linux", **declared}
        name = "/".join(platform[key] for key in ("os", "architecture", "variant")
                        if key in platform)
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as archive:
            info = tarfile.TarInfo("etc/base-release")
            info.size = len(name) + 1
            archive.addfile(info, io.BytesIO(f"{name}\n".encode()))
        raw = data.getvalue()
        layer = bytes_blob("application/vnd.docker.image.rootfs.diff.tar.gzip",
                           gzip.compress(raw, mtime=0))
        client.push_blob(repository, layer)
        config = bytes_blob("application/vnd.docker.container.image.v1+json", json.dumps({
            "architecture": platform["architecture"], "os": "linux",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.11.9"],
                       "Cmd": ["python3"]},
            "rootfs": {"type": "layers", "diff_ids": [bytes_blob("", raw).digest]}}).encode())
        client.push_blob(repository, config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                               "config": config.descriptor(),
                               "layers": [layer.descriptor()]}).encode()
        digest, _ = client.put_manifest(repository, f"1-{name.replace('/', '-')}", manifest,
                                        DOCKER_MANIFEST)
        pushed[name] = (layer.digest, digest)
        entries.append({"mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(manifest),
                        "platform": platform})
    # An attestation entry first, pointing at the first image: picking it would show.
    entries.insert(0, {**entries[0], "platform": ATTESTATION})
    index = json.dumps({"schemaVersion": 2, "manifests": entries,
                        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json"})
    client.put_manifest(repository, "1", index.encode(),
                        "application/vnd.docker.distribution.manifest.list.v2+json")
    return pushed


def test_base_image_layers_are_mounted_not_uploaded(
        promoter: Run, registry: str, model_dir: Path, tmp_path: Path) -> None:
    with RegistryClient(registry) as client:
        base_layer, amd64_manifest = _push_base(client, "base/runtime")["linux/amd64"]
    built = _build(promoter, str(model_dir), "--repository", f"{registry}/models/on-base",
                   "--base", f"{registry}/base/runtime:1")
    assert built["layers"][0] == base_layer
    assert not any("Python version" in note for note in built["notes"])  # from PYTHON_VERSION
    with RegistryClient(registry) as client:
        manifest = client.get_manifest("models/on-base", built["digest"])
        assert manifest is not None
        body = json.loads(manifest.body)
        base_size = body["layers"][0]["size"]
        ours = sum(layer["size"] for layer in body["layers"][1:]) + body["config"]["size"]
    assert body["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert base_size > 0
    assert built["bytes_uploaded"] == ours  # everything but the base layer, which was mounted
    config = skopeo_inspect(f"{registry}/models/on-base@{built['digest']}", config=True)
    assert config["config"]["Env"][0].startswith("PATH=/opt/ml/deps/bin:/usr/local/bin")
    assert "PYTHON_VERSION=3.11.9" in config["config"]["Env"]
    assert config["config"]["Labels"]["org.opencontainers.image.base.digest"] == amd64_manifest
    skopeo_copy_to_layout(f"{registry}/models/on-base@{built['digest']}", tmp_path / "l")
    rootfs = umoci_unpack(tmp_path / "l", "image", tmp_path / "bundle")
    assert (rootfs / "etc/base-release").read_text() == "linux/amd64\n"
    assert (rootfs / "opt/ml/model/MLmodel").is_file()


def test_an_arm_variant_gets_its_own_base_image_wherever_the_index_lists_it(
        promoter: Run, registry: str, tmp_path: Path) -> None:
    """containerd's matching: linux/arm/v7 runs the v7 image even when v6 is listed first,
    and the image's config says v7, so a node's runtime picks it for the right CPU."""
    from tests.image.model import save_model

    with RegistryClient(registry) as client:
        pushed = _push_base(client, "base/arm", ({"architecture": "arm", "variant": "v6"},
                                                 {"architecture": "arm", "variant": "v7"}))
    bare = save_model(tmp_path / "bare", requirements="# nothing to install\n")
    config = tmp_path / "promoter.yaml"
    code, out, err = _build_for("linux/arm/v7", promoter, config, bare,
                                f"{registry}/models/on-arm", f"{registry}/base/arm:1",
                                "--output", "json")
    assert code == 0, err
    built = json.loads(out)
    v7_layer, v7_manifest = pushed["linux/arm/v7"]
    assert built["layers"][0] == v7_layer
    image_config = skopeo_inspect(f"{registry}/models/on-arm@{built['digest']}", config=True)
    assert (image_config["os"], image_config["architecture"]) == ("linux", "arm")
    assert image_config["variant"] == "v7"
    assert image_config["config"]["Labels"]["org.opencontainers.image.base.digest"] == \
        v7_manifest
    # A platform the base lacks: the error names what it offers (not the attestation).
    code, _, err = _build_for("linux/arm64", promoter, config, bare,
                              f"{registry}/models/on-arm", f"{registry}/base/arm:1")
    assert code == 1 and "has no linux/arm64 image" in err
    assert "it offers linux/arm/v6, linux/arm/v7" in err and "unknown" not in err


def test_a_single_platform_base_of_another_architecture_is_refused_naming_both(
        promoter: Run, registry: str, tmp_path: Path) -> None:
    """A base that is one image (no index to pick from) is checked against image.platform:
    an amd64 base under linux/arm64 would give an image whose config says amd64 and whose
    dependencies were installed for arm64. The default variant is one spelling (arm64/v8)."""
    from tests.image.model import save_model

    with RegistryClient(registry) as client:
        pushed = _push_base(client, "base/single")
    bare = save_model(tmp_path / "bare", requirements="# nothing to install\n")
    config = tmp_path / "promoter.yaml"
    code, _, err = _build_for("linux/arm64", promoter, config, bare,
                              f"{registry}/models/on-single",
                              f"{registry}/base/single:1-linux-amd64")
    assert code == 1, err
    assert "is a single linux/amd64 image, and image.platform is linux/arm64" in " ".join(
        err.split())
    assert "Traceback" not in err
    with RegistryClient(registry) as client:
        assert client.get_manifest("models/on-single", "latest") is None  # nothing pushed

    code, out, err = _build_for("linux/arm64/v8", promoter, config, bare,
                                f"{registry}/models/on-single",
                                f"{registry}/base/single:1-linux-arm64", "--output", "json")
    assert code == 0, err
    built = json.loads(out)
    assert built["layers"][0] == pushed["linux/arm64"][0]
    image_config = skopeo_inspect(f"{registry}/models/on-single@{built['digest']}", config=True)
    assert (image_config["os"], image_config["architecture"]) == ("linux", "arm64")


def test_registry_problems_are_clear_errors(promoter: Run, registry: str,
                                            model_dir: Path, tmp_path: Path) -> None:
    code, _, err = promoter("image", "build", str(model_dir), "--repository",
                            f"{registry}/models/x", "--base", f"{registry}/base/missing:1")
    assert code == 1 and "base image" in err and "was not found" in err
    code, _, err = promoter("image", "build", str(tmp_path), "--repository",
                            f"{registry}/models/x")
    assert code == 1 and "no MLmodel file" in err
    code, _, err = promoter("image", "build", str(model_dir), "--repository",
                            f"127.0.0.1:{free_port()}/models/x")
    assert code == 3 and "unreachable" in err
    with RegistryClient(registry) as client, pytest.raises(PermanentError,
                                                           match="names a blob"):
        missing = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "0" * 64, "size": 2}
        client.put_manifest("models/x", "broken", json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": missing, "layers": []}).encode(),
            "application/vnd.oci.image.manifest.v1+json")


def test_dependency_layer_is_skipped_without_requirements_and_pip_errors_are_clear(
        promoter: Run, registry: str, tmp_path: Path) -> None:
    from tests.image.model import save_model

    bare = save_model(tmp_path / "bare", requirements="# nothing to install\n\n")
    built = _build(promoter, str(bare), "--repository", f"{registry}/models/bare")
    assert len(built["layers"]) == 1  # the model layer only
    broken = save_model(tmp_path / "broken", requirements="this is not (a requirement\n")
    code, _, err = promoter("image", "build", str(broken), "--repository",
                            f"{registry}/models/broken")
    assert code == 1 and "requirements.txt line 1 is not a valid requirement" in err
    unavailable = save_model(tmp_path / "unavailable", requirements="threadpoolctl==0.0.1\n")
    code, _, err = promoter("image", "build", str(unavailable), "--repository",
                            f"{registry}/models/unavailable")
    assert code == 1 and "installing the model's requirements" in err
    assert "ERROR: No matching distribution found for threadpoolctl==0.0.1" in err
    assert "wheel for the image's platform" in err


def _build_for(platform: str, promoter: Run, config: Path, model: Path, repository: str,
               base: str, *options: str) -> tuple[int, str, str]:
    """`promoter image build` of ``model`` onto ``base`` with image.platform ``platform``."""
    config.write_text(f"image:\n  platform: {platform}\n")
    return promoter("--config", str(config), "image", "build", str(model), "--repository",
                    repository, "--base", base, *options)
