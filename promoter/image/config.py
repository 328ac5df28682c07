"""The image config and manifest: base config + our layers, entrypoint, env and labels.

Serialised as compact JSON with sorted keys and a fixed ``created`` time, so the same inputs
always give the same config digest and therefore the same manifest digest.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from promoter.image.layers import Blob, Layer, bytes_blob
from promoter.image.platform import Platform

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MODEL_PATH = "/opt/ml/model"
DEPS_PATH = "/opt/ml/deps"
PORT = 8080
# Inside the container the server must listen on every interface to be reachable.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
ENTRYPOINT = ["mlflow", "models", "serve", "-m", MODEL_PATH, "-h", ALL_INTERFACES,
              "-p", str(PORT), "--env-manager", "local"]
EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _env(base_env: Sequence[str], with_deps: bool) -> list[str]:
    env = dict(item.split("=", 1) for item in base_env if "=" in item)
    if with_deps:
        env["PATH"] = f"{DEPS_PATH}/bin:" + env.get("PATH", DEFAULT_PATH)
        env["PYTHONPATH"] = DEPS_PATH + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PATH", DEFAULT_PATH)
    return [f"{key}={value}" for key, value in sorted(env.items())]


def set_platform(config: dict[str, Any], platform: Platform) -> None:
    """The config's os/architecture/variant: the base's where it names them (its config
    describes its binaries), else ``platform``'s. The variant (optional in the OCI config)
    is written only when the platform has one, so builds without one keep their digests."""
    config.setdefault("architecture", platform.architecture)
    config.setdefault("os", platform.os)
    if platform.variant and config["architecture"] == platform.architecture:
        config.setdefault("variant", platform.variant)


def image_config(base_config: Mapping[str, Any] | None, layers: Sequence[Layer],
                 labels: Mapping[str, str], *, platform: Platform,
                 with_deps: bool) -> dict[str, Any]:
    """Append ``layers`` (ours, after the base's) to the base config and set how to serve."""
    config: dict[str, Any] = copy.deepcopy(dict(base_config or {}))
    set_platform(config, platform)
    config["created"] = EPOCH
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + [layer.diff_id for layer in layers]
    history = list(config.get("history") or [])
    history += [{"created": EPOCH, "created_by": f"promoter: {layer.comment}"} for layer in layers]
    config["history"] = history
    run: dict[str, Any] = dict(config.get("config") or {})
    run["Entrypoint"] = list(ENTRYPOINT)
    run["Cmd"] = None
    run["Env"] = _env(run.get("Env") or [], with_deps)
    run["ExposedPorts"] = {**(run.get("ExposedPorts") or {}), f"{PORT}/tcp": {}}
    run["WorkingDir"] = "/opt/ml"
    run["Labels"] = {**(run.get("Labels") or {}), **labels}
    config["config"] = {key: value for key, value in run.items() if value is not None}
    return config


def image_manifest(config_blob: Blob, layers: Sequence[Layer],
                   annotations: Mapping[str, str] | None = None) -> bytes:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return canonical_json(manifest)


def config_blob(config: Mapping[str, Any]) -> Blob:
    return bytes_blob(OCI_CONFIG, canonical_json(config))
