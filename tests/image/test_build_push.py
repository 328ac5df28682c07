"""`promoter image build` against a real registry, read back by promoter, skopeo and umoci."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from promoter.adapters.oci import RegistryClient
from promoter.image.config import ENTRYPOINT
from tests.image.conftest import cli_json
from tests.image.model import SAMPLE, predictions, save_model
from tests.image.oracles import skopeo_copy_to_layout, skopeo_inspect, umoci_unpack
from tests.image.registry import free_port

pytestmark = pytest.mark.e2e
Run = Callable[..., tuple[int, str, str]]


def build(promoter: Run, *args: str) -> dict[str, Any]:
    code, out, err = promoter("image", "build", *args, "--output", "json")
    assert code == 0, err
    return dict(json.loads(out))


@pytest.fixture(scope="module")
def first_build(registry: str, model_dir: Path, shared_state: Path) -> dict[str, Any]:
    """Built once per module through the CLI (the state dir is shared for the pip cache)."""
    return cli_json(shared_state, "image", "build", str(model_dir), "--repository",
                    f"{registry}/models/iris")


def test_build_prints_the_pushed_digest_and_the_registry_has_it(
        first_build: dict[str, Any], registry: str) -> None:
    digest = str(first_build["digest"])
    assert first_build["reference"] == f"{registry}/models/iris@{digest}"
    with RegistryClient(registry) as client:
        manifest = client.get_manifest("models/iris", digest)
        assert manifest is not None and manifest.digest == digest
        assert client.manifest_digest("models/iris", "latest") == digest
        layers = [layer["digest"] for layer in json.loads(manifest.body)["layers"]]
    assert layers == first_build["layers"] and len(layers) == 2  # dependencies, model
    assert int(str(first_build["bytes_uploaded"])) > 0


def test_skopeo_reads_the_image_config_and_labels(first_build: dict[str, Any]) -> None:
    info = skopeo_inspect(str(first_build["reference"]))
    assert info["Digest"] == first_build["digest"]
    assert info["Labels"]["io.promoter.model.source"]
    assert info["Labels"]["io.promoter.build-inputs"].startswith("sha256:")
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"
    raw = skopeo_inspect(str(first_build["reference"]), raw=True)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


def test_unpacked_rootfs_holds_model_and_dependencies(
        first_build: dict[str, Any], tmp_path: Path, model_dir: Path) -> None:
    skopeo_copy_to_layout(str(first_build["reference"]), tmp_path / "layout")
    rootfs = umoci_unpack(tmp_path / "layout", "image", tmp_path / "bundle")
    assert (rootfs / "opt/ml/model/MLmodel").read_bytes() == (model_dir / "MLmodel").read_bytes()
    assert (rootfs / "opt/ml/deps/threadpoolctl.py").is_file()
    assert any(p.name.startswith("threadpoolctl-") for p in (rootfs / "opt/ml/deps").iterdir())


def test_rebuild_gives_the_same_digest_and_uploads_nothing(
        first_build: dict[str, Any], promoter: Run, registry: str, model_dir: Path) -> None:
    again = build(promoter, str(model_dir), "--repository", f"{registry}/models/iris")
    assert again["digest"] == first_build["digest"]
    assert again["bytes_uploaded"] == 0


def test_new_model_version_uploads_only_the_model_layer(
        first_build: dict[str, Any], promoter: Run, registry: str, tmp_path: Path) -> None:
    retrained = save_model(tmp_path / "iris-v2", seed=1)
    second = build(promoter, str(retrained), "--repository", f"{registry}/models/iris")
    old_layers, new_layers = first_build["layers"], second["layers"]
    assert new_layers[0] == old_layers[0]  # the dependency layer is reused
    assert new_layers[1] != old_layers[1]
    with RegistryClient(registry) as client:
        manifest = client.get_manifest("models/iris", str(second["digest"]))
    assert manifest is not None
    body = json.loads(manifest.body)
    model_layer_size = body["layers"][1]["size"]
    assert second["bytes_uploaded"] == model_layer_size + body["config"]["size"]


def test_oci_layout_output_matches_the_registry_digest_and_unpacks(
        first_build: dict[str, Any], promoter: Run, model_dir: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    built = build(promoter, str(model_dir), "--oci-layout", str(layout))
    assert built["digest"] == first_build["digest"]  # same inputs → same digest anywhere
    assert built["reference"] == f"oci:{layout}@{first_build['digest']}"
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == first_build["digest"]
    rootfs = umoci_unpack(layout, "latest", tmp_path / "bundle")
    assert (rootfs / "opt/ml/model/MLmodel").is_file()


def test_image_config_serves_the_model_on_8080(first_build: dict[str, Any]) -> None:
    config = skopeo_inspect(str(first_build["reference"]))
    assert config["Labels"]["org.opencontainers.image.title"]
    raw = skopeo_inspect(str(first_build["reference"]), raw=True)
    assert raw["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert ENTRYPOINT[:3] == ["mlflow", "models", "serve"]
    assert "PYTHONPATH=/opt/ml/deps" in config["Env"]


def _image_command(config: dict[str, Any], rootfs: Path, port: int) -> tuple[list[str],
                                                                              dict[str, str]]:
    """The image's own entrypoint and env, with image paths mapped into the unpacked rootfs,
    this machine's Python standing in for the base image's, and a loopback port."""
    run = config["config"]
    argv = list(run["Entrypoint"]) + list(run.get("Cmd") or [])
    assert argv[0] == "mlflow"
    mapped = [sys.executable, "-m", "mlflow"]
    for arg in argv[1:]:
        if arg.startswith("/opt/ml/"):
            arg = str(rootfs / arg.lstrip("/"))
        mapped.append({"0.0.0.0": "127.0.0.1", "8080": str(port)}.get(arg, arg))
    env = dict(os.environ)
    for item in run["Env"]:
        key, _, value = item.partition("=")
        if key == "PYTHONPATH":
            env[key] = ":".join(str(rootfs / part.lstrip("/")) for part in value.split(":"))
    return mapped, env


def test_unpacked_image_serves_the_model_with_its_own_command(
        first_build: dict[str, Any], tmp_path: Path, model_dir: Path) -> None:
    skopeo_copy_to_layout(str(first_build["reference"]), tmp_path / "layout")
    rootfs = umoci_unpack(tmp_path / "layout", "image", tmp_path / "bundle")
    config = skopeo_inspect(str(first_build["reference"]), config=True)
    port = free_port()
    argv, env = _image_command(config, rootfs, port)
    assert env["PYTHONPATH"] == str(rootfs / "opt/ml/deps")
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow models serve did not come up:\n"
                            + (tmp_path / "serve.log").read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": SAMPLE},
                              timeout=30)
        assert response.status_code == 200, response.text
        assert [int(x) for x in response.json()["predictions"]] == predictions(model_dir)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
