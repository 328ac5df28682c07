"""What the cluster runs: server flags the pinned versions know, and exactly the pinned digests.

Flag lists are upstream data (tests/data/server_flags/PROVENANCE.md). The digest checks read
the YAML that real Kustomize builds, so they see what Argo CD would apply.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from promoter import rendering
from promoter.core.render import ImagePin
from promoter.settings import load_settings
from tests.conftest import EXAMPLES, ROOT, requires_kubectl

FLAGS = Path(__file__).parent / "data" / "server_flags"
DESCRIPTORS = rendering.load_descriptors(ROOT / "templates")
SETTINGS = load_settings(EXAMPLES / "promoter.yaml", environ={})
# example → (runtime, how its workload pulls the signed artifact)
EXAMPLES_RUN = {"fraud-detector": ("deployment", "container image"),
                "vision-segmenter": ("kserve", "storageUri"),
                "llm-chat": ("vllm", "storageUri"),
                "code-assistant": ("vllm", "image volume"),
                "ad-ranker": ("triton", "image volume")}
IMAGE = ImagePin("registry.example.com/models/m", "sha256:" + "1a" * 32)
MODELCAR = ImagePin("registry.example.com/modelcars/m", "sha256:" + "2b" * 32)


def flag_list(runtime: str) -> set[str]:
    name = DESCRIPTORS[runtime]["server"]["flagList"]
    return {line.strip() for line in (FLAGS / name).read_text().splitlines() if line.strip()}


def flag(argument: str) -> str:
    return argument.split("=", 1)[0]


def test_every_runtime_with_server_arguments_names_a_flag_list() -> None:
    with_args = {name for name, data in DESCRIPTORS.items()
                 if any(form.get("args") for form in data["platforms"].values())}
    assert with_args == {"vllm", "triton"}
    for runtime in with_args:
        assert len(flag_list(runtime)) > 50, runtime  # a real list, not a hand-picked few


@pytest.mark.parametrize("runtime", ["vllm", "triton"])
def test_every_argument_a_descriptor_can_emit_is_a_flag_of_the_pinned_server(runtime: str) -> None:
    known = flag_list(runtime)
    patterns = [arg for form in DESCRIPTORS[runtime]["platforms"].values()
                for arg in form.get("args", [])]
    assert patterns
    assert [flag(arg) for arg in patterns if flag(arg) not in known] == []


def test_the_flag_check_catches_a_misspelt_flag() -> None:
    assert flag("--tensor-parallel-size=2") in flag_list("vllm")
    assert flag("--tensor-paralel-size=2") not in flag_list("vllm")
    assert flag("--model-store=/m") in flag_list("triton")
    assert flag("--model-dir=/m") not in flag_list("triton")


def build(tmp_path: Path, example: str, env: str) -> list[dict[str, Any]]:
    intent = rendering.load_intent_file(EXAMPLES / f"{example}.yaml")
    request = rendering.build_request(SETTINGS, intent, env, origin=example, image=IMAGE,
                                      modelcar=MODELCAR)
    rendering.write_tree(tmp_path, rendering.renderer(SETTINGS).render(request))
    overlay = tmp_path / request.deployment.name / "overlays" / env
    built = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                           text=True, check=True).stdout
    return [doc for doc in YAML(typ="safe", pure=True).load_all(built) if doc]


def pulled(documents: list[dict[str, Any]]) -> tuple[set[str], list[list[str]]]:
    """Every artifact reference the built workloads make the cluster pull, and server args."""
    references: set[str] = set()
    args: list[list[str]] = []
    for doc in documents:
        if doc["kind"] == "InferenceService":
            model = doc["spec"]["predictor"]["model"]
            references.add(model.get("storageUri", "<none>"))
            args.append(model.get("args", []))
        elif doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            references.update(c["image"] for c in pod["containers"])
            references.update(v["image"]["reference"] for v in pod.get("volumes", [])
                              if "image" in v)
            args.extend(c.get("args", []) for c in pod["containers"])
    return references, args


@requires_kubectl
@pytest.mark.parametrize("example", sorted(EXAMPLES_RUN))
def test_the_cluster_pulls_exactly_the_pinned_digest(tmp_path: Path, example: str) -> None:
    runtime, how = EXAMPLES_RUN[example]
    descriptor = DESCRIPTORS[runtime]
    expected = {
        "container image": {f"{IMAGE.repository}@{IMAGE.digest}"},
        "storageUri": {f"oci://{MODELCAR.repository}@{MODELCAR.digest}"},
        # a plain Deployment: the runtime's server image plus the modelcar as a volume
        "image volume": {descriptor["server"].get("image"),
                         f"{MODELCAR.repository}@{MODELCAR.digest}"},
    }[how]
    for env in ("staging", "production"):
        references, args = pulled(build(tmp_path / env, example, env))
        assert references == expected, env
        if "flagList" in descriptor["server"]:
            known = flag_list(runtime)
            emitted = [flag(arg) for container in args for arg in container]
            assert emitted and [f for f in emitted if f not in known] == []
