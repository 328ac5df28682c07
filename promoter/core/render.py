"""ModelDeployment → the Kustomize tree for one environment: ``{relative path: text}``.

Pure and deterministic: the same request renders byte-identical files. The base holds the
shape that every environment shares (names, selectors, probes, ports, labels of ownership); an
overlay holds everything bound to an environment or to the model version deployed there
(namespace, version pins and lineage, image digest, resources, GPU placement, region pinning,
replica bounds). Keeping version-bound values out of the base means promoting version 8 to
staging can never change what production runs at version 7.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import DictLoader

from promoter.core.spec import ModelDeployment
from promoter.core.templating import TemplateError, build_environment
from promoter.errors import UserError

SERVING_IMAGE_PLACEHOLDER = "serving-image"
HTTP_PORT = 8080

# Files per runtime, in kustomization `resources` order.
BASE_FILES = {
    "kserve": ("inferenceservice.yaml", "poddisruptionbudget.yaml"),
    "deployment": ("deployment.yaml", "service.yaml", "horizontalpodautoscaler.yaml",
                   "poddisruptionbudget.yaml"),
}
OVERLAY_PATCHES = {
    "kserve": ("patch-inferenceservice.yaml",),
    "deployment": ("patch-deployment.yaml", "patch-horizontalpodautoscaler.yaml"),
}
# Metrics endpoints: MLServer (KServe v2) serves them on 8082; the image's server on 8080.
METRICS = {"kserve": (8082, "/metrics"), "deployment": (HTTP_PORT, "/metrics")}


@dataclass(frozen=True)
class ImagePin:
    repository: str
    digest: str | None = None  # sha256:<hex>; when known, the image is pinned by it


@dataclass(frozen=True)
class Lineage:
    run_id: str | None = None
    source: str | None = None  # the model's artifact location in MLflow


@dataclass(frozen=True)
class RenderRequest:
    base: ModelDeployment          # resolved without environment overrides
    deployment: ModelDeployment    # resolved for `environment`
    environment: str
    namespace: str
    lineage: Lineage = Lineage()
    image: ImagePin | None = None


class Renderer:
    """Renders from templates given as text (``{"kserve/base/x.yaml.j2": source}``): loading
    them from a directory is the caller's I/O, so rendering itself never touches a file.

    Safe to share between worker threads: Jinja's environment is, and the one mutable piece,
    the last base rendered, is swapped under a lock.
    """

    def __init__(self, templates: Mapping[str, str]) -> None:
        self._env = build_environment(DictLoader(dict(templates)))
        # The base is shared by every environment of a model: render it once per distinct input.
        self._last_base: tuple[str, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def render(self, request: RenderRequest) -> dict[str, str]:
        name = request.deployment.name
        runtime = request.deployment.spec.runtime
        if request.base.name != name or request.base.spec.runtime != runtime:
            raise UserError(f"{name}: spec.environments.{request.environment} may not change "
                            "the name or the runtime; those are shared by every environment")
        files = dict(self.render_base(request.base))
        files.update(self.render_overlay(request))
        return files

    def render_base(self, deployment: ModelDeployment) -> dict[str, str]:
        key = deployment.model_dump_json()
        with self._lock:
            last = self._last_base
        if last is not None and last[0] == key:
            return dict(last[1])
        files = self._render_base(deployment)
        with self._lock:
            self._last_base = (key, files)
        return dict(files)

    def _render_base(self, deployment: ModelDeployment) -> dict[str, str]:
        runtime = deployment.spec.runtime
        context = base_context(deployment)
        files = {name: self._render(f"{runtime}/base/{name}.j2", context)
                 for name in BASE_FILES[runtime]}
        files["kustomization.yaml"] = self._render(
            "base/kustomization.yaml.j2", {**context, "resources": list(BASE_FILES[runtime])})
        return {f"{deployment.name}/base/{path}": text for path, text in sorted(files.items())}

    def render_overlay(self, request: RenderRequest) -> dict[str, str]:
        deployment = request.deployment
        runtime = deployment.spec.runtime
        context = overlay_context(request)
        files = {name: self._render(f"{runtime}/overlay/{name}.j2", context)
                 for name in OVERLAY_PATCHES[runtime]}
        files["kustomization.yaml"] = self._render(
            "overlay/kustomization.yaml.j2", {**context, "patches": list(OVERLAY_PATCHES[runtime])})
        prefix = f"{deployment.name}/overlays/{request.environment}"
        return {f"{prefix}/{path}": text for path, text in sorted(files.items())}

    def _render(self, template: str, context: dict[str, Any]) -> str:
        try:
            text = self._env.get_template(template).render(context)
        except TemplateError as exc:
            raise UserError(f"template {template} failed: {exc}",
                            hint="check the templates directory (see README: Templates)") from None
        # Block collections follow "key: "; drop that trailing blank so diffs stay clean.
        # (Safe: a serialised scalar never ends in a space; JSON strings end in a quote.)
        return "\n".join(line.rstrip() for line in text.split("\n"))


def base_context(deployment: ModelDeployment) -> dict[str, Any]:
    spec = deployment.spec
    name = deployment.name
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    ownership = {
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "promoter-models",
        "app.kubernetes.io/managed-by": "promoter",
        "promoter.dev/model": name,
        "promoter.dev/team": spec.owner.team,
        "promoter.dev/cost-center": spec.owner.cost_center,
        # Cost-allocation conventions (Kubecost/OpenCost) read these plain keys on pods.
        "app": name,
        "team": spec.owner.team,
        "cost-center": spec.owner.cost_center,
    }
    metrics_port, metrics_path = METRICS[spec.runtime]
    return {
        "name": name,
        "registered_model": spec.model.name,
        "description": spec.description,
        "selector": selector,
        "labels": {**selector, **ownership},
        "scrape_annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(metrics_port),
            "prometheus.io/path": metrics_path,
        },
        "port": HTTP_PORT,
        "image_placeholder": SERVING_IMAGE_PLACEHOLDER,
        "scaling": _scaling(deployment),
    }


def overlay_context(request: RenderRequest) -> dict[str, Any]:
    deployment = request.deployment
    spec = deployment.spec
    # The registered model name is in the base's commonAnnotations already.
    lineage = {"promoter.dev/model-version": spec.model.version}
    if request.lineage.run_id:
        lineage["promoter.dev/mlflow-run-id"] = request.lineage.run_id
    if request.lineage.source:
        lineage["promoter.dev/model-source"] = request.lineage.source
    image = None
    if request.image is not None:
        image = {"name": SERVING_IMAGE_PLACEHOLDER, "newName": request.image.repository}
        if request.image.digest:
            image["digest"] = request.image.digest
            lineage["promoter.dev/image"] = f"{request.image.repository}@{request.image.digest}"
        else:
            image["newTag"] = f"v{spec.model.version}"
    return {
        "name": deployment.name,
        "environment": request.environment,
        "namespace": request.namespace,
        "env_labels": {
            "promoter.dev/environment": request.environment,
            "env": request.environment,
            "app.kubernetes.io/version": spec.model.version,
        },
        "lineage": lineage,
        "image": image,
        "storage_uri": request.lineage.source,
        "resources": _resources(deployment),
        "placement": _placement(deployment),
        "scaling": _scaling(deployment),
    }


def _scaling(deployment: ModelDeployment) -> dict[str, Any]:
    scaling = deployment.spec.scaling
    if deployment.spec.runtime == "deployment" and scaling.metric not in ("cpu", "memory"):
        raise UserError(f"{deployment.name}: spec.scaling.metric {scaling.metric!r} needs KServe; "
                        "the deployment runtime's HorizontalPodAutoscaler scales on cpu or memory")
    return {"min": scaling.min_replicas, "max": scaling.max_replicas,
            "metric": scaling.metric, "target": scaling.target}


def _resources(deployment: ModelDeployment) -> dict[str, Any]:
    resources = deployment.spec.resources
    limits: dict[str, str] = {"memory": resources.memory}
    if resources.gpu.count:
        # Extended resources: requests default to limits, and may not differ from them.
        limits["nvidia.com/gpu"] = str(resources.gpu.count)
    return {"requests": {"cpu": resources.cpu, "memory": resources.memory}, "limits": limits}


def _placement(deployment: ModelDeployment) -> dict[str, Any]:
    spec = deployment.spec
    placement: dict[str, Any] = {}
    if spec.resources.gpu.count:
        placement["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        if spec.resources.gpu.type:
            placement["nodeSelector"] = {"nvidia.com/gpu.product": spec.resources.gpu.type}
    if spec.regions:
        placement["affinity"] = {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "topology.kubernetes.io/region",
                                       "operator": "In", "values": list(spec.regions)}]}]}}}
    return placement
