"""promoter's own deployment (deploy/) as Kustomize builds it, and what tests read from it."""

from __future__ import annotations

import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
OVERLAYS = ("sqlite", "postgresql")
CONTAINERFILE = DEPLOY / "Containerfile"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Every object `kubectl kustomize DIRECTORY` emits (real Kustomize v5)."""
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [document for document in YAML(typ="safe").load_all(done.stdout) if document]


@cache
def _overlay(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(DEPLOY / "overlays" / name))


def overlay(name: str) -> list[dict[str, Any]]:
    return list(_overlay(name))


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [document for document in overlay(name) if document["kind"] == kind]


def one(name: str, kind: str) -> dict[str, Any]:
    found = objects(name, kind)
    assert len(found) == 1, f"{name}: {len(found)} {kind} objects"
    return found[0]


def pod_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(name, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    (only,) = pod_spec(name)["containers"]
    result: dict[str, Any] = only
    return result


def config_text(name: str) -> str:
    """promoter.yaml as the ConfigMap the Deployment mounts carries it."""
    config_map = one(name, "ConfigMap")
    text: str = config_map["data"]["promoter.yaml"]
    return text


def env(name: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(name).get("env", [])}


def containerfile_instructions(path: Path = CONTAINERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def containerfile_user(path: Path = CONTAINERFILE) -> tuple[int, int | None]:
    """The uid (and gid) of the last USER instruction; it must be numeric."""
    users = [arguments for keyword, arguments in containerfile_instructions(path)
             if keyword == "USER"]
    assert users, f"{path} has no USER instruction (the image would run as root)"
    user, _, group = users[-1].partition(":")
    return int(user), int(group) if group else None


def containerfile_useradd_uid(path: Path = CONTAINERFILE) -> int:
    for keyword, arguments in containerfile_instructions(path):
        if keyword == "RUN" and "useradd" in arguments:
            words = shlex.split(arguments.split("useradd", 1)[1].split(";")[0])
            return int(words[words.index("--uid") + 1])
    raise AssertionError(f"{path} creates no user with useradd")
