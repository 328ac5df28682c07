"""The external tools promoter runs, and their versions (for `promoter --version`).

Each tool is asked for its version with a short timeout; a tool that is missing, hangs or
fails is reported as such instead of failing the command: a bug report should carry whatever
could be found.
"""

from __future__ import annotations

import shutil
import subprocess

NOT_FOUND = "not found"
# name → the command that prints its version (first line kept, unless noted)
TOOLS: dict[str, list[str]] = {
    "kubectl": ["kubectl", "version", "--client"],
    "kustomize": ["kustomize", "version"],
    "docker-registry": ["docker-registry", "--version"],
    "skopeo": ["skopeo", "--version"],
}


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unusable ({type(exc).__name__})"
    text = (done.stdout or done.stderr).strip()
    if done.returncode != 0 or not text:
        return f"unusable (exit code {done.returncode})"
    return text


def versions() -> dict[str, str]:
    """{tool: version line or "not found"}; kustomize comes with kubectl when not on PATH."""
    found: dict[str, str] = {}
    for name, command in TOOLS.items():
        found[name] = _run(command) or NOT_FOUND
    kubectl = found["kubectl"]
    if kubectl != NOT_FOUND and not kubectl.startswith("unusable"):
        lines = kubectl.splitlines()
        found["kubectl"] = _after_colon(lines[0])
        bundled = [line for line in lines if line.lower().startswith("kustomize")]
        if found["kustomize"] == NOT_FOUND and bundled:
            found["kustomize"] = f"{_after_colon(bundled[0])} (bundled with kubectl)"
    for name in ("kustomize", "docker-registry", "skopeo"):
        found[name] = _bare(name, found[name].splitlines()[0])
    return found


def _bare(name: str, line: str) -> str:
    """``skopeo version 1.9.3`` → ``1.9.3``: the tool's own name and "version" dropped."""
    words = line.split()
    while words and words[0].lower().rstrip(":") in (name, "version"):
        words.pop(0)
    return " ".join(words) or line


def _after_colon(line: str) -> str:
    return line.split(":", 1)[1].strip() if ":" in line else line.strip()
