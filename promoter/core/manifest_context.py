"""What the templates see: the base's and an overlay's context, from the resolved intent.

Split from ``core.render`` (which owns the request and the Renderer) so that each stays small.
The base context is environment-neutral; the overlay context holds everything bound to the
environment or to the version deployed there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from promoter.core import tree_facts
from promoter.core.masking import without_url_credentials
from promoter.core.policy import gpu_claim
from promoter.core.runtimes import ARG_FIELD, Form, RuntimeDescriptor
from promoter.core.spec import ModelDeployment

if TYPE_CHECKING:
    from promoter.core.render import RenderRequest

SERVING_IMAGE_PLACEHOLDER = "serving-image"
KSERVE_POD_LABEL = "serving.kserve.io/inferenceservice"
# Pod labels KServe sets on the predictor's pods itself (app=isvc.<name>-predictor, also its
# Deployment's selector): a value of ours would be overwritten, so none is rendered there.
KSERVE_OWNED_POD_LABELS = frozenset({"app"})


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
    labels = {**selector, **ownership}
    owned = KSERVE_OWNED_POD_LABELS if descriptor.platform(deployment) == "kserve" else set()
    pod_labels = [key for role, key in sorted(cost_labels.items()) if key and key not in owned]
    return {
        "name": name,
        "registered_model": spec.model.name,
        "description": spec.description,
        "selector": selector,
        "pod_selector": _pod_selector(deployment, descriptor),
        "labels": labels,
        "predictor_labels": {key: value for key, value in labels.items() if key not in owned},
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
    # Team and GPU claim let the team quota sum what the target branch already runs.
    lineage = {tree_facts.MODEL_VERSION: spec.model.version,
               tree_facts.TEAM: spec.owner.team,
               tree_facts.GPU_CLAIM: str(gpu_claim(deployment))}
    if request.lineage.run_id:
        lineage[tree_facts.RUN_ID] = request.lineage.run_id
    if request.lineage.source:
        # Committed to the GitOps repository: a source's URL credentials (userinfo, a
        # presigned URL's signature) stay out, as in every other text promoter writes.
        lineage[tree_facts.MODEL_SOURCE] = without_url_credentials(request.lineage.source)
    image = None
    if descriptor.artifact == "pyfunc-image" and request.image is not None:
        image = {"name": SERVING_IMAGE_PLACEHOLDER, "newName": request.image.repository}
        if request.image.digest:
            image["digest"] = request.image.digest
            lineage[tree_facts.IMAGE] = f"{request.image.repository}@{request.image.digest}"
        else:
            image["newTag"] = f"v{spec.model.version}"
    modelcar = None
    if descriptor.artifact == "modelcar" and request.modelcar is not None:
        modelcar = request.modelcar.reference  # only a digest pins the signed artifact
        if modelcar:
            lineage[tree_facts.MODELCAR] = modelcar
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
        "resources": _resources(deployment, descriptor.platform(deployment)),
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
        fields = ARG_FIELD.findall(pattern)
        if any(values.get(name) is None for name in fields):
            continue
        args.append(ARG_FIELD.sub(lambda m: str(values[m.group(1)]), pattern))
    return args


def _scaling(deployment: ModelDeployment) -> dict[str, Any]:
    scaling = deployment.spec.scaling
    return {"min": scaling.min_replicas, "max": scaling.max_replicas,
            "metric": scaling.metric, "target": scaling.target}


def _resources(deployment: ModelDeployment, platform: str) -> dict[str, Any]:
    resources = deployment.spec.resources
    limits: dict[str, str] = {"memory": resources.memory}
    if platform == "kserve":
        # KServe merges this container over its runtime's, key by key, and the stock runtimes
        # limit cpu to 1: without a limit of our own, any request above 1 CPU is rejected.
        limits["cpu"] = resources.cpu
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
