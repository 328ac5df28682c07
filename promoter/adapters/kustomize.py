"""`kubectl kustomize` (kustomize v5, bundled with kubectl) as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from promoter.errors import UserError

KUBECTL_HINT = "install kubectl (it bundles kustomize v5), or put `kustomize` on PATH"


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise UserError("neither kubectl nor kustomize is on PATH", hint=KUBECTL_HINT)


def build(overlay: Path, timeout: float = 120) -> str:
    """The YAML stream `kustomize build` produces for ``overlay``; UserError with its message."""
    try:
        completed = subprocess.run([*kustomize_command(), str(overlay)], capture_output=True,
                                   text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"kustomize build {overlay} took longer than {timeout:.0f} s") from None
    if completed.returncode != 0:
        message = completed.stderr.strip() or completed.stdout.strip() or "no output"
        raise UserError(f"kustomize build {overlay} failed: {message}")
    return completed.stdout
