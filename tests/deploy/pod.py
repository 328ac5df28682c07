"""The Deployment's pod laid out on this machine: every volume a directory under a temp dir,
the ConfigMap's files written, the files the pod's ``*_FILE`` variables name created with
random values (the Secrets themselves are never in the repository), and the environment
rewritten to point there. Paths outside every volume mount stay as they are, so a variable or
a promoter.yaml path that names an unmounted file is noticed."""

from __future__ import annotations

import secrets
from pathlib import Path, PurePosixPath
from typing import Any

from tests.deploy import built


def mount_of(pod_spec: dict[str, Any], container: dict[str, Any],
             path: str) -> tuple[dict[str, Any], PurePosixPath] | None:
    """The volume ``path`` lies in for ``container``, and the path inside it; None when
    nothing is mounted there."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    mounts = {PurePosixPath(mount["mountPath"]): mount["name"]
              for mount in container.get("volumeMounts", [])}
    pure = PurePosixPath(path)
    for mount_path in sorted(mounts, key=lambda p: len(p.parts), reverse=True):
        if pure == mount_path or mount_path in pure.parents:
            return volumes[mounts[mount_path]], pure.relative_to(mount_path)
    return None


class LocalPod:
    def __init__(self, overlay: str, root: Path) -> None:
        self.overlay = overlay
        self.root = root
        spec = built.pod_spec(overlay)
        self.volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        self.mounts = {PurePosixPath(mount["mountPath"]): mount["name"]
                       for mount in built.container(overlay).get("volumeMounts", [])}
        for name in self.volumes:
            (root / name).mkdir(parents=True, exist_ok=True)
        config_maps = {document["metadata"]["name"]: document
                       for document in built.objects(overlay, "ConfigMap")}
        for name, volume in self.volumes.items():
            if "configMap" in volume:
                data = config_maps[volume["configMap"]["name"]]["data"]
                for key, text in data.items():
                    (root / name / key).write_text(self.rewrite(text))

    def mount_of(self, path: str) -> tuple[dict[str, Any], PurePosixPath] | None:
        return mount_of(built.pod_spec(self.overlay), built.container(self.overlay), path)

    def local(self, path: str) -> Path:
        found = self.mount_of(path)
        assert found is not None, f"{self.overlay}: {path} is on no volume the container mounts"
        volume, inside = found
        return self.root / volume["name"] / inside

    def secret_file(self, path: str) -> Path:
        """The local file for ``path`` in a mounted Secret, created with a random value; it must
        be one of the volume's ``items`` when the volume lists them."""
        found = self.mount_of(path)
        assert found is not None, f"{self.overlay}: {path} is on no volume the container mounts"
        volume, inside = found
        assert "secret" in volume, f"{self.overlay}: {path} is on volume {volume['name']}, " \
                                   "which is not a Secret"
        items = volume["secret"].get("items")
        if items is not None:
            assert str(inside) in {item["path"] for item in items}, \
                f"{self.overlay}: {path} is not among the items of {volume['name']}"
        local = self.root / volume["name"] / inside
        local.parent.mkdir(parents=True, exist_ok=True)
        if not local.exists():
            local.write_text(secrets.token_hex(16) + "\n")
        return local

    def rewrite(self, text: str) -> str:
        """``text`` with every mounted path prefix replaced by its local directory."""
        for mount_path in sorted(self.mounts, key=lambda p: len(str(p)), reverse=True):
            text = text.replace(f"{mount_path}/", f"{self.root / self.mounts[mount_path]}/")
        return text

    def environment(self) -> dict[str, str]:
        """The container's literal variables, local; ``*_FILE`` ones name created files.
        Variables from secretKeyRef are left out (their values are not in the repository)."""
        environ: dict[str, str] = {}
        for name, entry in built.env(self.overlay).items():
            if "value" not in entry:
                continue
            value = str(entry["value"])
            if name.endswith("_FILE"):
                environ[name] = str(self.secret_file(value))
            elif value.startswith("/"):
                environ[name] = str(self.local(value))
            else:
                environ[name] = value
        return environ
