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
from promoter.core.quantity import parse_quantity
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


def flag_list(runtime: str, platform: str) -> set[str]:
    """Every flag the server that ``runtime``'s ``platform`` form runs knows: the union of
    the lists its descriptor names for that platform (``server.flagLists``)."""
    names = DESCRIPTORS[runtime]["server"]["flagLists"][platform]
    return {line.strip() for name in names
            for line in (FLAGS / name).read_text().splitlines() if line.strip()}


def flag(argument: str) -> str:
    return argument.split("=", 1)[0]


FORMS_WITH_ARGS = sorted((runtime, platform) for runtime, data in DESCRIPTORS.items()
                         for platform, form in data["platforms"].items() if form.get("args"))


def test_every_form_with_server_arguments_names_its_flag_lists() -> None:
    assert FORMS_WITH_ARGS == [("triton", "kubernetes"), ("vllm", "kserve"),
                               ("vllm", "kubernetes")]
    for runtime, platform in FORMS_WITH_ARGS:
        # a real list, not a hand-picked few
        assert len(flag_list(runtime, platform)) > 50, (runtime, platform)


@pytest.mark.parametrize(("runtime", "platform"), FORMS_WITH_ARGS)
def test_every_argument_a_descriptor_can_emit_is_a_flag_of_the_pinned_server(
        runtime: str, platform: str) -> None:
    known = flag_list(runtime, platform)
    patterns = DESCRIPTORS[runtime]["platforms"][platform]["args"]
    assert [flag(arg) for arg in patterns if flag(arg) not in known] == []


def test_the_flag_check_catches_a_misspelt_flag() -> None:
    assert flag("--tensor-parallel-size=2") in flag_list("vllm", "kubernetes")
    assert flag("--tensor-paralel-size=2") not in flag_list("vllm", "kubernetes")
    assert flag("--model-store=/m") in flag_list("triton", "kubernetes")
    assert flag("--model-dir=/m") not in flag_list("triton", "kubernetes")


def test_the_flag_lists_are_the_pinned_versions() -> None:
    """The plain form's list is v0.7.2's, not the v0.7 line's: a flag renamed between commits
    of one line shows (v0.7.2 still has AsyncEngineArgs' --disable-log-requests and not yet
    --intial-incremental-detokenization-offset). The KServe form also knows KServe's own
    flags and vLLM 0.9's (--max-model-len is in both vLLM lists; --model_dir only in KServe's)."""
    plain, on_kserve = flag_list("vllm", "kubernetes"), flag_list("vllm", "kserve")
    assert "--disable-log-requests" in plain
    assert "--intial-incremental-detokenization-offset" not in plain
    assert {"--model_dir", "--backend", "--max-model-len"} <= on_kserve
    assert "--model_dir" not in plain
    assert "--enable-prompt-embeds" in on_kserve - plain  # new in the 0.9 line


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


def platform_of(documents: list[dict[str, Any]]) -> str:
    return "kserve" if any(d["kind"] == "InferenceService" for d in documents) else "kubernetes"


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
        documents = build(tmp_path / env, example, env)
        references, args = pulled(documents)
        assert references == expected, env
        if "flagLists" in descriptor["server"]:
            known = flag_list(runtime, platform_of(documents))
            emitted = [flag(arg) for container in args for arg in container]
            assert emitted and [f for f in emitted if f not in known] == []


KSERVE_RUNTIMES = Path(__file__).parent / "data" / "kserve_runtimes"
KSERVE_EXAMPLES = sorted(name for name, (runtime, how) in EXAMPLES_RUN.items()
                         if how == "storageUri")


def stock_runtime(model_format: str) -> dict[str, Any]:
    """KServe's own ClusterServingRuntime that auto-selects ``model_format`` (v0.16.0,
    tests/data/kserve_runtimes/PROVENANCE.md)."""
    for path in sorted(KSERVE_RUNTIMES.glob("*.yaml")):
        runtime: dict[str, Any] = YAML(typ="safe", pure=True).load(path.read_text())
        if any(f["name"] == model_format and f.get("autoSelect")
               for f in runtime["spec"]["supportedModelFormats"]):
            return runtime
    raise AssertionError(f"no stock KServe runtime serves {model_format!r}")


def merge_over_runtime(runtime: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """The container KServe runs: its MergeRuntimeContainers, a strategic merge of the
    InferenceService's container over the runtime's, for the fields checked here (the
    resources' requests and limits merge key by key; ports merge by containerPort)."""
    merged: dict[str, Any] = {"resources": {}}
    for part in ("requests", "limits"):
        merged["resources"][part] = {**runtime.get("resources", {}).get(part, {}),
                                     **model.get("resources", {}).get(part, {})}
    ports = {port["containerPort"]: port for port in runtime.get("ports", [])}
    ports.update({port["containerPort"]: port for port in model.get("ports", [])})
    merged["ports"] = list(ports.values())
    return merged


@requires_kubectl
@pytest.mark.parametrize("example", KSERVE_EXAMPLES)
def test_kserve_runs_the_predictor_with_its_stock_runtime_and_scrapes_its_metrics(
        tmp_path: Path, example: str) -> None:
    for env in ("staging", "production"):
        documents = build(tmp_path / env, example, env)
        (service,) = [d for d in documents if d["kind"] == "InferenceService"]
        predictor = service["spec"]["predictor"]
        model = predictor["model"]
        runtime = stock_runtime(model["modelFormat"]["name"])
        container = merge_over_runtime(runtime["spec"]["containers"][0], model)
        # The Deployment KServe builds must pass validation: no request above its limit.
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        for resource, requested in requests.items():
            if resource in limits:
                assert parse_quantity(str(requested)) <= \
                    parse_quantity(str(limits[resource])), (env, resource)
        # KServe's Service: the first declared port as its HTTP port, the others by name.
        ports = container["ports"]
        assert ports and ports[0]["containerPort"] == 8080, env
        service_ports = [ports[0].get("name") or "http"] + [p["name"] for p in ports[1:]]
        (monitor,) = [d for d in documents if d["kind"] == "ServiceMonitor"]
        for endpoint in monitor["spec"]["endpoints"]:
            if "targetPort" in endpoint:  # Prometheus keeps declared container ports only
                assert endpoint["targetPort"] in [p["containerPort"] for p in ports], env
            else:
                assert endpoint["port"] in service_ports, env
        # KServe sets the pods' app label itself (isvc.<name>-predictor): ours would be lost.
        assert "app" not in predictor.get("labels", {}), env
        assert "app" not in monitor["spec"].get("podTargetLabels", []), env


def test_the_kserve_merge_check_catches_a_request_above_the_runtime_limit() -> None:
    runtime = stock_runtime("mlflow")["spec"]["containers"][0]
    merged = merge_over_runtime(runtime, {"resources": {"requests": {"cpu": "8"},
                                                        "limits": {"memory": "8Gi"}}})
    assert merged["resources"]["limits"] == {"cpu": "1", "memory": "8Gi"}
    assert parse_quantity(merged["resources"]["requests"]["cpu"]) > parse_quantity("1")
