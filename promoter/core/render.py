"""ModelDeployment → the Kustomize tree for one environment: ``{relative path: text}``.

Pure and deterministic: the same request renders byte-identical files. The base holds the
shape that every environment shares (names, selectors, probes, ports, labels of ownership); an
overlay holds everything bound to an environment or to the model version deployed there
(namespace, version pins and lineage, image digest, resources, GPU placement, region pinning,
replica bounds). Keeping version-bound values out of the base means promoting version 8 to
staging can never change what production runs at version 7.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import DictLoader

from promoter.core import runtimes
from promoter.core.config import DEFAULT_COST_LABELS, frozen
from promoter.core.runtimes import Form, RuntimeDescriptor
from promoter.core.spec import ModelDeployment
from promoter.core.templating import TemplateError, build_environment
from promoter.errors import UserError

SERVING_IMAGE_PLACEHOLDER = "serving-image"
KSERVE_POD_LABEL = "serving.kserve.io/inferenceservice"
_ARG_FIELD = re.compile(r"\{([A-Za-z]+)\}")


@dataclass(frozen=True)
class ImagePin:
    repository: str
    digest: str | None = None  # sha256:<hex>; when known, the image is pinned by it

    @property
    def reference(self) -> str | None:
        return f"{self.repository}@{self.digest}" if self.digest else None


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
    image: ImagePin | None = None      # the pyfunc serving image (runtimes with that artifact)
    modelcar: ImagePin | None = None   # the signed modelcar (runtimes that run one)
    cost_labels: Mapping[str, str] = field(default_factory=lambda: frozen(DEFAULT_COST_LABELS))
    priority_class_name: str | None = None
    zone_spread: str | None = "ScheduleAnyway"
    image_base_configured: bool = True  # see runtimes.baseless_image_problem
    demo: bool = False


class Renderer:
    """Renders from templates given as text (``{"kserve/base/x.yaml.j2": source}``) and runtime
    descriptors given as parsed mappings (``{"kserve": {...}}``): loading them from a directory
    is the caller's I/O, so rendering itself never touches a file.

    Safe to share between worker threads: Jinja's environment is, and the one mutable piece,
    the last base rendered, is swapped under a lock.
    """

    def __init__(self, templates: Mapping[str, str],
                 descriptors: Mapping[str, Mapping[str, Any]]) -> None:
        self._env = build_environment(DictLoader(dict(templates)))
        self.runtimes = runtimes.parse_descriptors(descriptors)
        # The base is shared by every environment of a model: render it once per distinct input.
        self._last_base: tuple[str, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def check(self, request: RenderRequest) -> RuntimeDescriptor:
        """The runtime's descriptor, or a UserError naming what the intent asks that it can't."""
        name, env = request.deployment.name, request.environment
        runtime = request.deployment.spec.runtime
        if request.base.name != name or request.base.spec.runtime != runtime:
            raise UserError(f"{name}: spec.environments.{env} may not change "
                            "the name or the runtime; those are shared by every environment")
        descriptor = runtimes.check(request.deployment, self.runtimes, origin=f"{name} ({env})")
        runtimes.check(request.base, self.runtimes, origin=name)
        if descriptor.platform(request.base) != descriptor.platform(request.deployment):
            raise UserError(f"{name}: spec.environments.{env}.serving.platform may not differ "
                            "from the base's; the platform decides the base's resources")
        problem = runtimes.baseless_image_problem(
            descriptor, image_built=request.image is not None,
            base_configured=request.image_base_configured, demo=request.demo)
        if problem:
            raise UserError(f"{name}: {problem}")
        return descriptor

    def render(self, request: RenderRequest) -> dict[str, str]:
        descriptor = self.check(request)
        files = dict(self.render_base(request.base, descriptor, request.cost_labels))
        files.update(self.render_overlay(request, descriptor))
        return files

    def render_base(self, deployment: ModelDeployment, descriptor: RuntimeDescriptor,
                    cost_labels: Mapping[str, str]) -> dict[str, str]:
        key = deployment.model_dump_json() + repr(sorted(cost_labels.items()))
        with self._lock:
            last = self._last_base
        if last is not None and last[0] == key:
            return dict(last[1])
        files = self._render_base(deployment, descriptor, cost_labels)
        with self._lock:
            self._last_base = (key, files)
        return dict(files)

    def _render_base(self, deployment: ModelDeployment, descriptor: RuntimeDescriptor,
                     cost_labels: Mapping[str, str]) -> dict[str, str]:
        form = descriptor.form(deployment)
        context = base_context(deployment, descriptor, cost_labels)
        files = {_output(name): self._render(_template(descriptor, "base", name), context)
                 for name in form.base}
        files["kustomization.yaml"] = self._render(
            "base/kustomization.yaml.j2", {**context, "resources": [_output(n) for n in form.base]})
        return {f"{deployment.name}/base/{path}": text for path, text in sorted(files.items())}

    def render_overlay(self, request: RenderRequest,
                       descriptor: RuntimeDescriptor) -> dict[str, str]:
        deployment = request.deployment
        form = descriptor.form(deployment)
        context = overlay_context(request, descriptor)
        files = {_output(name): self._render(_template(descriptor, "overlay", name), context)
                 for name in form.overlay}
        files["kustomization.yaml"] = self._render(
            "overlay/kustomization.yaml.j2",
            {**context, "patches": [_output(name) for name in form.overlay]})
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


def _template(descriptor: RuntimeDescriptor, part: str, name: str) -> str:
    if name.startswith("shared/"):
        return f"shared/{part}/{name.removeprefix('shared/')}.j2"
    return f"{descriptor.name}/{part}/{name}.j2"


def _output(name: str) -> str:
    return name.removeprefix("shared/")


def _pod_selector(deployment: ModelDeployment, descriptor: RuntimeDescriptor) -> dict[str, str]:
    if descriptor.platform(deployment) == "kserve":
        return {KSERVE_POD_LABEL: deployment.name}
    return {"app.kubernetes.io/name": deployment.name,
            "app.kubernetes.io/instance": deployment.name}


def base_context(deployment: ModelDeployment, descriptor: RuntimeDescriptor,
                 cost_labels: Mapping[str, str]) -> dict[str, Any]:
    spec = deployment.spec
    name = deployment.name
    form = descriptor.form(deployment)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    ownership = {
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "promoter-models",
        "app.kubernetes.io/managed-by": "promoter",
        "promoter.dev/model": name,
        "promoter.dev/runtime": spec.runtime,
        "promoter.dev/team": spec.owner.team,
        "promoter.dev/cost-center": spec.owner.cost_center,
    }
    # Cost-allocation tools (OpenCost, Kubecost) aggregate by plain pod labels; keys configurable.
    costs = {"team": spec.owner.team, "cost_center": spec.owner.cost_center, "model": name,
             "runtime": spec.runtime}
    ownership.update({cost_labels[role]: value for role, value in costs.items()
                      if cost_labels.get(role)})
    metrics = form.metrics.model_dump(by_alias=True, exclude_none=True) if form.metrics else None
    pod_labels = [key for role, key in sorted(cost_labels.items()) if key]
    return {
        "name": name,
        "registered_model": spec.model.name,
        "description": spec.description,
        "selector": selector,
        "pod_selector": _pod_selector(deployment, descriptor),
        "labels": {**selector, **ownership},
        "pod_target_labels": pod_labels,
        "metrics": metrics,
        "deployment_mode": form.deployment_mode,
        "server": descriptor.server,
        "ports": descriptor.server.get("ports", {}),
        "image_placeholder": SERVING_IMAGE_PLACEHOLDER,
        "scaling": _scaling(deployment),
    }


def overlay_context(request: RenderRequest, descriptor: RuntimeDescriptor) -> dict[str, Any]:
    deployment = request.deployment
    spec = deployment.spec
    # The registered model name is in the base's commonAnnotations already.
    lineage = {"promoter.dev/model-version": spec.model.version}
    if request.lineage.run_id:
        lineage["promoter.dev/mlflow-run-id"] = request.lineage.run_id
    if request.lineage.source:
        lineage["promoter.dev/model-source"] = request.lineage.source
    image = None
    if descriptor.artifact == "pyfunc-image" and request.image is not None:
        image = {"name": SERVING_IMAGE_PLACEHOLDER, "newName": request.image.repository}
        if request.image.digest:
            image["digest"] = request.image.digest
            lineage["promoter.dev/image"] = f"{request.image.repository}@{request.image.digest}"
        else:
            image["newTag"] = f"v{spec.model.version}"
    modelcar = None
    if descriptor.artifact == "modelcar" and request.modelcar is not None:
        modelcar = request.modelcar.reference  # only a digest pins the signed artifact
        if modelcar:
            lineage["promoter.dev/modelcar"] = modelcar
    env_labels = {"promoter.dev/environment": request.environment,
                  "app.kubernetes.io/version": spec.model.version}
    if request.cost_labels.get("environment"):
        env_labels[request.cost_labels["environment"]] = request.environment
    form = descriptor.form(deployment)
    return {
        "name": deployment.name,
        "environment": request.environment,
        "namespace": request.namespace,
        "env_labels": env_labels,
        "lineage": lineage,
        "image": image,
        "storage_uri": f"oci://{modelcar}" if modelcar else None,
        "modelcar": modelcar,
        "server": descriptor.server,
        "args": server_args(form, deployment),
        "resources": _resources(deployment),
        "placement": _placement(request, descriptor),
        "scaling": _scaling(deployment),
    }


def server_args(form: Form, deployment: ModelDeployment) -> list[str]:
    """The descriptor's argument patterns with intent values filled in; an argument whose
    value the intent leaves unset is left out (the server's default applies)."""
    spec = deployment.spec
    gpus = spec.resources.gpu.count
    values: dict[str, Any] = {
        "name": deployment.name,
        "gpus": gpus if gpus and not spec.resources.gpu.mig else 1,
        "maxModelLen": spec.serving.max_model_len,
        "gpuMemoryUtilization": spec.serving.gpu_memory_utilization,
    }
    args = []
    for pattern in form.args:
        fields = _ARG_FIELD.findall(pattern)
        if any(values.get(name) is None for name in fields):
            continue
        args.append(_ARG_FIELD.sub(lambda m: str(values[m.group(1)]), pattern))
    return args


def _scaling(deployment: ModelDeployment) -> dict[str, Any]:
    scaling = deployment.spec.scaling
    return {"min": scaling.min_replicas, "max": scaling.max_replicas,
            "metric": scaling.metric, "target": scaling.target}


def _resources(deployment: ModelDeployment) -> dict[str, Any]:
    resources = deployment.spec.resources
    limits: dict[str, str] = {"memory": resources.memory}
    if resources.gpu.count:
        # Extended resources: requests default to limits, and may not differ from them.
        gpu = f"nvidia.com/mig-{resources.gpu.mig}" if resources.gpu.mig else "nvidia.com/gpu"
        limits[gpu] = str(resources.gpu.count)
    return {"requests": {"cpu": resources.cpu, "memory": resources.memory}, "limits": limits}


def _placement(request: RenderRequest, descriptor: RuntimeDescriptor) -> dict[str, Any]:
    deployment = request.deployment
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
    if request.zone_spread:
        placement["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": request.zone_spread,
            "labelSelector": {"matchLabels": _pod_selector(deployment, descriptor)}}]
    if request.priority_class_name:
        placement["priorityClassName"] = request.priority_class_name
    return placement
