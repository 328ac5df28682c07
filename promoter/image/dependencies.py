"""The dependency layer: the model's requirements installed for the image's platform and Python.

Installing is I/O behind the ``WheelInstaller`` port (pip, in ``promoter.adapters.pip``); this
module decides what to install for which platform and turns the result into a reproducible
layer, cached under the state dir by the hash of everything that shapes it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from promoter.errors import UserError
from promoter.image.layers import TAR_GZIP, Layer, file_layer, write_gzip_layer
from promoter.image.tarstream import entries_for_tree
from promoter.ports.image import WheelInstaller

DEPS_ARCNAME = "opt/ml/deps"
_ARCH_TAGS = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}


def requirement_lines(model_dir: Path) -> list[str]:
    path = model_dir / "requirements.txt"
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return [line for line in lines if line]


def pip_platforms(arch: str) -> list[str]:
    machine = _ARCH_TAGS.get(arch)
    if machine is None:
        raise UserError(f"no wheel platform known for architecture {arch!r}",
                        hint="use linux/amd64 or linux/arm64 as image.platform")
    return [f"manylinux_2_{minor}_{machine}" for minor in (28, 17)] + [f"linux_{machine}"]


def dependency_layer(model_dir: Path, cache_dir: Path, installer: WheelInstaller, *, arch: str,
                     python_version: str, pip_options: Sequence[str],
                     status: Callable[[str], None] | None = None) -> Layer | None:
    """The cached dependency layer for ``model_dir``'s requirements; None when there are none.
    ``status`` hears what a slow first build is doing (installing, packing)."""
    lines = requirement_lines(model_dir)
    if not lines:
        return None
    key_source = {"requirements": lines, "arch": arch, "python": python_version,
                  "pip_options": list(pip_options), "layout": 1}
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()
    cache_dir.mkdir(parents=True, exist_ok=True)
    blob_path, record_path = cache_dir / f"{key}.tar.gz", cache_dir / f"{key}.json"
    if not (record_path.is_file() and blob_path.is_file()):
        with tempfile.TemporaryDirectory(prefix="promoter-deps-", dir=cache_dir) as work:
            target = Path(work) / "target"
            requirements = Path(work) / "requirements.txt"
            requirements.write_text("\n".join(lines) + "\n", encoding="utf-8")
            if status is not None:
                status(f"installing {len(lines)} requirements for python {python_version} "
                       f"{arch} into the dependency layer (cached for the next build)")
            installer.install(requirements, target, platforms=pip_platforms(arch),
                              python_version=python_version, options=pip_options)
            _portable_scripts(target / "bin")
            if status is not None:
                status("packing the dependency layer")
            diff_id, digest, size = write_gzip_layer(entries_for_tree(target, DEPS_ARCNAME),
                                                     blob_path)
        record = {"diff_id": diff_id, "digest": digest, "size": size, "inputs": key_source}
        record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    return file_layer(blob_path, TAR_GZIP, record["diff_id"], record["digest"], record["size"],
                      f"dependencies ({len(lines)} requirements)")


def _portable_scripts(bin_dir: Path) -> None:
    """pip writes this machine's interpreter into script shebangs; the image has its own."""
    if not bin_dir.is_dir():
        return
    for script in bin_dir.iterdir():
        if not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
            script.write_bytes(b"#!/usr/bin/env python3\n" + rest)
