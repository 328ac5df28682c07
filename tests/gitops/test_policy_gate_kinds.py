"""`promoter gitops policy`: native sidecars count toward the pod's GPUs, and an overlay may not
carry a Namespace.

An init container with ``restartPolicy: Always`` is a native sidecar (Kubernetes 1.29+ by
default): it runs beside the main containers for the pod's whole life. The gate counted it as
an ordinary init container (max, not sum), so code-assistant at its full quota (4 GPUs x 3
replicas = devtools' 12) with a 4-GPU sidecar passed, really claiming 24. The gate let any
Namespace object through too: the AppProject whitelists the kind (Argo CD's CreateNamespace
needs it), so an overlay could relabel ``kube-system`` privileged, or its own namespace
without the ``policy.sigstore.dev/include`` opt-in that signature enforcement depends on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promoter.core.declared_intent import declared_intent
from promoter.settings import load_settings
from tests.conftest import EXAMPLES, ROOT, cli_runner, requires_kubectl
from tests.gitops.test_policy_gate import _as_rendered, _production_decision, _workload

IMAGE = "registry.example.com/models/helper@sha256:" + "3" * 64


def _devtools_with_quota(quota: int) -> Any:
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    return settings.model_copy(update={"policy": settings.policy.model_copy(
        update={"team_gpu_quota": {"devtools": quota}})})


def _container(name: str, gpus: int, resource: str = "nvidia.com/gpu",
               restart: str | None = None) -> dict:
    container: dict[str, Any] = {"name": name, "image": IMAGE,
                                 "resources": {"limits": {resource: str(gpus)}}}
    if restart:
        container["restartPolicy"] = restart
    return container


def _sidecar(gpus: int, resource: str = "nvidia.com/gpu") -> dict:
    return _container(f"sidecar-{gpus}", gpus, resource, "Always")


def _init(gpus: int, resource: str = "nvidia.com/gpu") -> dict:
    return _container(f"init-{gpus}", gpus, resource)


def _declared_gpus(containers: list[dict], inits: list[dict]) -> dict:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "m", "namespace": "models-production",
                               "labels": {"promoter.dev/team": "devtools"}},
                  "spec": {"replicas": 1, "template": {"spec": {
                      "containers": containers, "initContainers": inits}}}}
    return declared_intent([deployment])["spec"]["resources"]["gpu"]


@pytest.mark.parametrize(("containers", "inits", "count"), [
    # a sidecar runs beside the app containers: summed with them
    ([4], [_sidecar(4)], 8),
    ([1], [_sidecar(2), _sidecar(3)], 6),
    # an ordinary init container runs alone first: the larger of it and the containers
    ([1], [_init(4)], 4),
    ([4], [_init(2)], 4),
    # ... but beside every sidecar declared before it, not those after
    ([1], [_sidecar(2), _init(3)], 5),
    ([1], [_init(3), _sidecar(2)], 3),
    ([0], [_sidecar(1), _init(2), _sidecar(1), _init(1)], 3),
    # restartPolicy other than Always (only Always is valid there): an ordinary init container
    ([1], [_container("init", 2, restart="OnFailure")], 2),
], ids=["sidecar", "two sidecars", "init larger", "containers larger", "sidecar then init",
        "init then sidecar", "interleaved", "not Always"])
def test_the_pod_gpus_are_its_effective_request_as_kubernetes_reckons_it(
        containers: list[int], inits: list[dict], count: int) -> None:
    """Kubernetes docs, Sidecar containers, "Resource sharing within containers": the higher
    of every app and sidecar container together, and each init container with the sidecars
    started before it."""
    app = [_container(f"app-{i}", gpus) for i, gpus in enumerate(containers)]
    assert _declared_gpus(app, inits) == {"count": count}


def test_mig_instances_in_a_sidecar_are_summed_like_whole_gpus() -> None:
    mig = "nvidia.com/mig-1g.10gb"
    app = [_container("app", 2, mig)]
    assert _declared_gpus(app, [_sidecar(3, mig)]) == {"count": 5, "mig": "1g.10gb"}
    assert _declared_gpus(app, [_init(3, mig)]) == {"count": 3, "mig": "1g.10gb"}


def _with_init(container: dict) -> Callable[[list[dict]], None]:
    def change(docs: list[dict]) -> None:
        pod = _workload(docs)["spec"]["template"]["spec"]
        pod.setdefault("initContainers", []).append(container)
    return change


@requires_kubectl
def test_a_gpu_sidecar_counts_toward_the_team_quota() -> None:
    """code-assistant's production overlay claims devtools' whole quota (4 GPUs x 3 replicas):
    a 4-GPU native sidecar doubles each pod's GPUs, while an ordinary 4-GPU init container,
    run before the app container, adds none."""
    settings = _devtools_with_quota(12)
    assert _production_decision(settings, _as_rendered).allowed
    assert _production_decision(settings, _with_init(_init(4))).allowed
    decision = _production_decision(settings, _with_init(_sidecar(4)))
    assert not decision.allowed
    reasons = " ".join(decision.reasons)
    assert "devtools claims 24 GPUs in production" in reasons, decision.reasons
    assert "over its quota of 12" in reasons


# --------------------------------------------- Namespace objects

def _namespace(name: str, labels: dict[str, str]) -> Callable[[list[dict]], None]:
    def change(docs: list[dict]) -> None:
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": labels}})
    return change


@requires_kubectl
@pytest.mark.parametrize(("name", "labels"), [
    ("kube-system", {"policy.sigstore.dev/include": "false",
                     "pod-security.kubernetes.io/enforce": "privileged"}),
    ("models-production", {"policy.sigstore.dev/include": "false"}),
    # even the environment's own, labelled as the ApplicationSet labels it: promoter renders
    # none, and Argo CD's managed namespace metadata is the one place that label is set
    ("models-production", {"policy.sigstore.dev/include": "true"}),
], ids=["kube-system privileged", "own namespace opted out", "own namespace as Argo CD's"])
def test_a_namespace_in_an_overlay_is_denied(name: str, labels: dict[str, str]) -> None:
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    decision = _production_decision(settings, _namespace(name, labels))
    assert not decision.allowed
    reasons = " ".join(decision.reasons)
    assert f"the overlay holds Namespace/{name}; promoter renders no Namespace" in reasons
    assert "policy.sigstore.dev/include" in reasons


NAMESPACE_YAML = """apiVersion: v1
kind: Namespace
metadata:
  name: kube-system
  labels:
    policy.sigstore.dev/include: "false"
    pod-security.kubernetes.io/enforce: privileged
"""


@requires_kubectl
def test_a_namespace_added_to_an_overlays_kustomization_fails_the_gate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As a merge request would add it, built by real Kustomize: its namespace transformer
    renames the Namespace to the environment's, which loses the opt-in label all the same."""
    tree = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests/code-assistant", tree / "code-assistant")
    overlay = tree / "code-assistant/overlays/production"
    (overlay / "namespace.yaml").write_text(NAMESPACE_YAML)
    kustomization = overlay / "kustomization.yaml"
    text = kustomization.read_text()
    assert "- ../../base\n" in text
    kustomization.write_text(text.replace("- ../../base\n", "- ../../base\n- namespace.yaml\n"))
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                        "policy", str(tree), "--output", "json")
    assert code == 4, err
    verdicts = {Path(v["overlay"]).name: v for v in json.loads(out)}
    assert verdicts["staging"]["allowed"] and not verdicts["production"]["allowed"]
    assert "the overlay holds Namespace/models-production; promoter renders no Namespace" in \
        " ".join(verdicts["production"]["reasons"])
