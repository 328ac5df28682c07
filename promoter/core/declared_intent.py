"""What a built overlay declares, read back as a partial ModelDeployment (pure).

The CI gate cannot see the intent a merge request was rendered from, only the manifests. This
recovers the fields the placement policy looks at, from the resources promoter renders:

- owner: the ``team`` and ``cost-center`` labels; model name and version: the
  ``promoter.dev/registered-model`` and ``promoter.dev/model-version`` annotations;
- runtime: the ``promoter.dev/runtime`` label every rendered workload carries (older trees
  without it: ``kserve`` when there is an InferenceService, else ``deployment``);
- GPU count and type: ``nvidia.com/gpu`` limits and the ``nvidia.com/gpu.product`` node
  selector (InferenceService predictor or Deployment pod template);
- regions: the ``topology.kubernetes.io/region`` ``In`` node-affinity values;
- replicas: the InferenceService predictor's or the HPA's min/max.

Anything else (CPU, memory, scaling metric) is left to the defaults: the rules that use it are
not placement rules. MLflow tags and run metrics are not in the manifests either, so rules on
them (``policy.required_tags``, metric gates) are not checked from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from promoter.core.spec import API_VERSION, KIND

REGION_KEY = "topology.kubernetes.io/region"
GPU = "nvidia.com/gpu"
GPU_PRODUCT = "nvidia.com/gpu.product"


def _get(data: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            data = data[key] if isinstance(data, list) and len(data) > key else None
        elif isinstance(data, Mapping):
            data = data.get(key)
        else:
            return None
    return data


def _pod_spec(resource: Mapping[str, Any]) -> Mapping[str, Any] | None:
    found = None
    if resource.get("kind") == "InferenceService":
        found = _get(resource, "spec", "predictor")
    elif resource.get("kind") == "Deployment":
        found = _get(resource, "spec", "template", "spec")
    return found if isinstance(found, Mapping) else None


def _containers(resource: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pod = _pod_spec(resource) or {}
    found = [c for c in pod.get("containers") or [] if isinstance(c, Mapping)]
    model = _get(pod, "model")
    if isinstance(model, Mapping):
        found.append(model)
    return found


def _regions(pod: Mapping[str, Any]) -> list[str]:
    terms = _get(pod, "affinity", "nodeAffinity",
                 "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms") or []
    regions: list[str] = []
    for term in terms:
        for expression in _get(term, "matchExpressions") or []:
            if _get(expression, "key") == REGION_KEY and _get(expression, "operator") == "In":
                regions.extend(str(v) for v in _get(expression, "values") or [])
    return regions


def declared_intent(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A ModelDeployment document with what ``resources`` (one built overlay) declare."""
    resources = list(resources)
    workloads = [r for r in resources if r.get("kind") in ("InferenceService", "Deployment")]
    spec: dict[str, Any] = {
        "runtime": "kserve" if any(r.get("kind") == "InferenceService" for r in workloads)
        else "deployment"}
    metadata: dict[str, Any] = {}
    for resource in workloads:
        labels = _get(resource, "metadata", "labels") or {}
        annotations = _get(resource, "metadata", "annotations") or {}
        metadata["name"] = _get(resource, "metadata", "name")
        if labels.get("promoter.dev/runtime"):
            spec["runtime"] = str(labels["promoter.dev/runtime"])
        if annotations.get("promoter.dev/registered-model"):
            spec["model"] = {"name": str(annotations["promoter.dev/registered-model"]),
                             "version": str(annotations.get("promoter.dev/model-version", "0"))}
        if labels.get("team"):
            spec["owner"] = {"team": str(labels["team"]),
                             "costCenter": str(labels.get("cost-center") or "unknown")}
        pod = _pod_spec(resource) or {}
        gpu: dict[str, Any] = {}
        for container in _containers(resource):
            count = _get(container, "resources", "limits", GPU)
            if count is not None:
                gpu["count"] = int(str(count))
        if _get(pod, "nodeSelector", GPU_PRODUCT):
            gpu["type"] = str(_get(pod, "nodeSelector", GPU_PRODUCT))
        if gpu:
            spec["resources"] = {"gpu": gpu}
        regions = _regions(pod)
        if regions:
            spec["regions"] = regions
        if resource.get("kind") == "InferenceService":
            _replicas(spec, pod)
    for resource in resources:
        if resource.get("kind") == "HorizontalPodAutoscaler":
            _replicas(spec, _get(resource, "spec") or {})
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {k: v for k, v in metadata.items() if v}, "spec": spec}


def _replicas(spec: dict[str, Any], source: Mapping[str, Any]) -> None:
    scaling = {key: int(source[key]) for key in ("minReplicas", "maxReplicas")
               if isinstance(source.get(key), int)}
    if scaling:
        spec["scaling"] = {**spec.get("scaling", {}), **scaling}
