"""skopeo and umoci as independent readers of what promoter pushed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make install-system installs it)")
    return path


def skopeo_inspect(reference: str, *, raw: bool = False, config: bool = False) -> Any:
    command = [_tool("skopeo"), "inspect", "--tls-verify=false", "--no-tags"]
    if raw:
        command.append("--raw")
    if config:
        command.append("--config")
    result = subprocess.run([*command, f"docker://{reference}"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def skopeo_copy_to_layout(reference: str, layout: Path, tag: str = "image") -> None:
    result = subprocess.run(
        [_tool("skopeo"), "copy", "--src-tls-verify=false", f"docker://{reference}",
         f"oci:{layout}:{tag}"], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """Unpack (umoci checks every layer's diff_id); returns the rootfs."""
    result = subprocess.run(
        [_tool("umoci"), "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)],
        capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"
