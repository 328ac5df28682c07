"""What a built overlay declares, read back as a partial ModelDeployment (pure).

The CI gate cannot see the intent a merge request was rendered from, only the manifests. This
recovers the fields the placement policy looks at, from the resources promoter renders:

- owner: the ``promoter.dev/team`` and ``promoter.dev/cost-center`` labels, which promoter
  renders on every workload whatever ``cost_labels`` says (the cost labels' keys are
  configurable, so a key such as ``team`` may hold another role's value, or a hand-edited
  one: they are never read); model name and version: the ``promoter.dev/registered-model``
  and ``promoter.dev/model-version`` annotations;
- runtime: the ``promoter.dev/runtime`` label every rendered workload carries (older trees
  without it: ``kserve`` when there is an InferenceService, else ``deployment``);
- GPU count and type: ``nvidia.com/gpu`` (or MIG) limits or requests, the pod's effective
  request as Kubernetes reckons it (``_gpu_count``): summed over the pod's containers and
  native sidecars (init containers with ``restartPolicy: Always``), or an init container's
  with the sidecars before it if that is more (for an InferenceService the containers are
  also ``model`` and every framework field such as ``huggingface`` or ``triton``, each a
  container of the predictor's pod), and the
  ``nvidia.com/gpu.product`` the pod may be placed on (InferenceService predictor or
  Deployment pod template);
- regions: the ``topology.kubernetes.io/region`` values the pod may be placed in. For both
  labels the node selector and the required node affinity must hold together (ANDed), and
  the affinity's terms are ORed: each must pin the label ``In`` a list, and together they
  admit the union of their values;
- replicas: the most any of them allows (core.declared_replicas: the InferenceService
  predictor's by KServe's rules, the HPA's, the KEDA ScaledObject's, the Deployment's own).

The gate is the authoritative check of a hand-edited merge request, so what it cannot judge
faithfully is refused (``UserError``), never read partly: a kind promoter does not render
(the AppProject would not sync it either), a Namespace (the AppProject syncs the kind, for
Argo CD's CreateNamespace, but promoter renders none: NAMESPACE_DENIED), more than one
workload, an InferenceService component beside the predictor (a transformer or explainer
runs pods of its own), a predictor ``workerSpec`` (multi-node worker pods) or a pod's
``resourceClaims`` (GPUs by dynamic resource allocation), a GPU type named twice differently,
a node-affinity term that leaves the GPU product or region open while another pins it,
resources in more than one namespace.

Anything else (CPU, memory, scaling metric) is left to the defaults: the rules that use it are
not placement rules. MLflow tags and run metrics are not in the manifests either, so rules on
them (``policy.required_tags``, metric gates) are not checked from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from promoter.core.declared_replicas import declared_scaling
from promoter.core.documents import dig
from promoter.core.gitops_scaffold import NAMESPACED_KINDS
from promoter.core.spec import API_VERSION, KIND
from promoter.errors import UserError

REGION_KEY = "topology.kubernetes.io/region"
GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"   # + profile, e.g. nvidia.com/mig-1g.10gb
GPU_PRODUCT = "nvidia.com/gpu.product"
# promoter's own ownership labels (core.manifest_context): fixed keys, unlike cost_labels'.
TEAM_LABEL = "promoter.dev/team"
COST_CENTER_LABEL = "promoter.dev/cost-center"
WORKLOADS = ("InferenceService", "Deployment")
# What an overlay may hold: what promoter renders (the AppProject's namespaced whitelist).
KINDS = frozenset(kind for _, kind in NAMESPACED_KINDS)
# Promoter renders no Namespace: Argo CD creates the environment's (CreateNamespace=true, with
# the policy-controller opt-in label, gitops_scaffold) or the platform does. The AppProject
# must still whitelist the kind for CreateNamespace, so Argo CD would apply one from an
# overlay: under any name (kustomize's namespace transformer renames it to the environment's)
# and with any labels, e.g. dropping policy.sigstore.dev/include or Pod Security's level.
NAMESPACE_DENIED = ("promoter renders no Namespace (Argo CD creates the environment's, "
                    "CreateNamespace=true, labelled policy.sigstore.dev/include: \"true\"); "
                    "a Namespace is cluster-scoped, so Argo CD would apply one from an overlay "
                    "whatever its name, and its labels could drop that opt-in to signature "
                    "enforcement or loosen the Pod Security level")
# The KServe v1beta1 predictor fields that are a container of the predictor's own pod, with
# ``resources`` of their own (promoter/schemas/inferenceservice_v1beta1.json): ``model`` and
# every framework shorthand. KServe runs the one set as the serving container; a hand edit may
# set any, so each present is counted (summed: errs high, never low). A test keeps this in
# step with the schema.
PREDICTOR_CONTAINER_FIELDS = ("model", "huggingface", "lightgbm", "onnx", "paddle", "pmml",
                              "pytorch", "sklearn", "tensorflow", "triton", "xgboost")
# Pod fields through which pods get GPUs the gate cannot count from the manifests alone:
# refused, not read partly. Promoter renders neither.
UNJUDGED_POD_FIELDS = {
    # KServe's multi-node serving: worker pods beside each predictor replica, their GPUs and
    # number set by KServe from tensorParallelSize / pipelineParallelSize, their placement
    # from the workerSpec's own node selector and affinity.
    "workerSpec": "runs worker pods whose GPUs, number and placement KServe derives from "
                  "its parallelism sizes",
    # Dynamic resource allocation: a claim may hand the pod GPUs no container limit names.
    "resourceClaims": "may allocate GPUs by dynamic resource allocation, which no container "
                      "limit shows",
}


def _pod_spec(resource: Mapping[str, Any]) -> Mapping[str, Any] | None:
    found = None
    if resource.get("kind") == "InferenceService":
        found = dig(resource, "spec", "predictor")
    elif resource.get("kind") == "Deployment":
        found = dig(resource, "spec", "template", "spec")
    return found if isinstance(found, Mapping) else None


def _containers(pod: Mapping[str, Any], field: str = "containers") -> list[Mapping[str, Any]]:
    found = [c for c in pod.get(field) or [] if isinstance(c, Mapping)]
    if field == "containers":
        found.extend(spec for spec in (pod.get(name) for name in PREDICTOR_CONTAINER_FIELDS)
                     if isinstance(spec, Mapping))
    return found


def _gpu_resources(container: Mapping[str, Any]) -> set[str]:
    """The GPU resources one container names: whole GPUs and MIG instances
    (``nvidia.com/mig-<profile>``, what promoter renders for ``gpu.mig``)."""
    names: set[str] = set()
    for part in ("limits", "requests"):
        amounts = dig(container, "resources", part)
        if isinstance(amounts, Mapping):
            names.update(str(name) for name in amounts
                         if name == GPU or str(name).startswith(MIG_PREFIX))
    return names


def _gpus(container: Mapping[str, Any]) -> int:
    """The GPUs (whole, or MIG instances) one container asks for: per resource its limit, or
    its request (Kubernetes requires the two to be equal for an extended resource when both
    are set)."""
    total = 0
    for name in _gpu_resources(container):
        counts = [dig(container, "resources", part, name) for part in ("limits", "requests")]
        try:
            total += max((int(str(count)) for count in counts if count is not None), default=0)
        except ValueError:
            raise UserError(f"{name} must be a whole number, got {counts}") from None
    return total


def _is_sidecar(container: Mapping[str, Any]) -> bool:
    """An init container with ``restartPolicy: Always``: a native sidecar (Kubernetes 1.29+
    by default), started in order with the init containers and then run beside the main
    containers for the pod's whole life."""
    return str(container.get("restartPolicy")) == "Always"


def _gpu_count(pod: Mapping[str, Any]) -> int | None:
    """The pod's GPUs as Kubernetes reckons its effective request (None when no container
    names the resource); whole GPUs and MIG instances alike (``_gpus``).

    Kubernetes docs, "Sidecar containers", "Resource sharing within containers"
    (https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/): the pod's
    effective request is the higher of the sum of all non-init containers (app *and* sidecar
    containers) and the effective init request, the highest over the init containers, each
    counted with the sidecars already running when it starts. As the scheduler's
    ``PodRequests`` (k8s.io/component-helpers resource helpers): walking the init containers
    in order, a sidecar adds to the running sum and its init peak is every sidecar so far; an
    ordinary init container's peak is its own GPUs plus the sidecars declared before it."""
    containers, inits = _containers(pod), _containers(pod, "initContainers")
    if not any(_gpu_resources(c) for c in (*containers, *inits)):
        return None
    running = sum(_gpus(c) for c in containers)
    sidecars = init_peak = 0
    for init in inits:
        if _is_sidecar(init):
            sidecars += _gpus(init)
            running += _gpus(init)
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, _gpus(init) + sidecars)
    return max(running, init_peak)


def _gpu_types(pod: Mapping[str, Any]) -> set[str]:
    """Every GPU product the pod may be placed on (empty: any)."""
    return _placement(pod, GPU_PRODUCT) or set()


def _placement(pod: Mapping[str, Any], key: str) -> set[str] | None:
    """The values of node label ``key`` the pod may run on; None when nothing restricts it.

    The node selector and the required node affinity must both hold (Kubernetes ANDs them),
    so each narrows the other; one that nothing can satisfy is refused (the pod never runs,
    and a claim the gate cannot place is not judged)."""
    per_term = [_term_values(term, key) for term in _terms(pod)]
    selected = dig(pod, "nodeSelector", key)
    if selected is None:
        return _affinity_values(per_term, key)
    # Pinned by the selector, the value is known whatever the terms say about it: the pod
    # runs on a node one term matches, and some term must admit the selected value.
    if per_term and all(values is not None and str(selected) not in values
                        for values in per_term):
        admitted = set().union(*(values for values in per_term if values is not None))
        raise UserError(f"the node selector's {key} {selected} is not among the required node "
                        f"affinity's ({', '.join(sorted(admitted))}): no node satisfies both")
    return {str(selected)}


def _terms(pod: Mapping[str, Any]) -> list[Any]:
    return list(dig(pod, "affinity", "nodeAffinity",
                    "requiredDuringSchedulingIgnoredDuringExecution",
                    "nodeSelectorTerms") or [])


def _affinity_values(per_term: list[set[str] | None], key: str) -> set[str] | None:
    """The values of ``key`` the required node affinity admits, from what each of its terms
    admits (``_term_values``); None when no term pins it.

    Kubernetes ORs the nodeSelectorTerms: a pod may run on a node any one term matches. So the
    admitted values are the union over the terms, and only when every term pins ``key``: a
    term without it lets the pod run on a node with any value, which the gate cannot judge."""
    if all(values is None for values in per_term):
        return None
    unpinned = [str(index + 1) for index, values in enumerate(per_term) if values is None]
    if unpinned:
        raise UserError(f"the required node affinity's term {', '.join(unpinned)} of "
                        f"{len(per_term)} does not pin {key} with 'In'; Kubernetes ORs the "
                        f"terms, so the pod may run on a node with any {key}, which the gate "
                        "cannot judge (pin it in every term)")
    return set().union(*(values for values in per_term if values is not None))


def _term_values(term: Any, key: str) -> set[str] | None:
    """The values of ``key`` one nodeSelectorTerm admits (its expressions all hold: their
    ``In`` lists intersect, less its ``NotIn`` values; ``Exists`` adds no limit); None when
    no ``In`` pins ``key`` in it, so a node with any value may match."""
    expressions = [e for e in dig(term, "matchExpressions") or [] if dig(e, "key") == key]
    by_operator: dict[str, list[set[str]]] = {}
    for expression in expressions:
        operator = str(dig(expression, "operator"))
        if operator not in ("In", "NotIn", "Exists"):
            raise UserError(f"the {key} node affinity uses {operator!r}; the gate judges 'In' "
                            "lists (narrowed by 'NotIn' or 'Exists')")
        by_operator.setdefault(operator, []).append(
            {str(v) for v in dig(expression, "values") or []})
    if "In" not in by_operator:
        return None
    return set.intersection(*by_operator["In"]) - set().union(*by_operator.get("NotIn", []))


def _refuse_what_cannot_be_judged(resources: list[Mapping[str, Any]]) -> None:
    namespaces = [f"Namespace/{dig(r, 'metadata', 'name')}" for r in resources
                  if r.get("kind") == "Namespace"]
    if namespaces:
        raise UserError(f"the overlay holds {', '.join(namespaces)}; {NAMESPACE_DENIED}")
    foreign = sorted({str(r.get("kind")) for r in resources} - KINDS)
    if foreign:
        raise UserError(f"the overlay holds {', '.join(foreign)}, which promoter does not "
                        f"render and the gate cannot judge (it judges {', '.join(sorted(KINDS))})")
    workloads = [r for r in resources if r.get("kind") in WORKLOADS]
    if len(workloads) > 1:
        names = ", ".join(f"{r.get('kind')}/{dig(r, 'metadata', 'name')}" for r in workloads)
        raise UserError(f"the overlay runs {len(workloads)} workloads ({names}); promoter "
                        "renders one, and the gate judges one")
    for workload in workloads:
        _refuse_components_beside_the_predictor(workload)
        _refuse_unjudged_pod_fields(workload)


def _refuse_unjudged_pod_fields(workload: Mapping[str, Any]) -> None:
    pod = _pod_spec(workload) or {}
    for field, why in UNJUDGED_POD_FIELDS.items():
        if pod.get(field):
            raise UserError(f"{workload.get('kind')}/{dig(workload, 'metadata', 'name')} sets "
                            f"{field}, which {why}: promoter renders no {field}, and the gate "
                            "cannot judge the GPUs it claims")


def _refuse_components_beside_the_predictor(workload: Mapping[str, Any]) -> None:
    """An InferenceService's transformer and explainer run pods of their own, with their own
    GPUs, replicas and placement. Promoter renders only the predictor, so anything beside it
    in the spec is a shape the gate does not judge: refused, like a kind it does not render,
    rather than left out of the claim."""
    spec = dig(workload, "spec")
    if workload.get("kind") != "InferenceService" or not isinstance(spec, Mapping):
        return
    others = sorted(str(key) for key, value in spec.items()
                    if key != "predictor" and value is not None)
    if others:
        raise UserError(f"InferenceService/{dig(workload, 'metadata', 'name')} has "
                        f"{', '.join(f'spec.{key}' for key in others)}: promoter renders only "
                        "the predictor, and the gate judges only that (other components run "
                        "pods with their own GPUs, replicas and placement)")


def declared_namespace(resources: Iterable[Mapping[str, Any]]) -> str | None:
    """The one namespace the overlay's resources name (None when none names one)."""
    found = {str(dig(r, "metadata", "namespace")) for r in resources
             if dig(r, "metadata", "namespace")}
    if len(found) > 1:
        raise UserError(f"the overlay's resources are in {len(found)} namespaces "
                        f"({', '.join(sorted(found))}); promoter renders one")
    return next(iter(found), None)


def _regions(pod: Mapping[str, Any]) -> list[str]:
    """Every region the pod may be placed in (empty: any)."""
    return sorted(_placement(pod, REGION_KEY) or ())


def _owner(workload: Mapping[str, Any], labels: Mapping[str, Any]) -> dict[str, str]:
    """The owning team and cost centre, from promoter's own labels only. Every tree promoter
    rendered carries them, so a workload without the team label was not rendered by promoter
    (or had it removed): refused, rather than guessed from a configurable cost label."""
    if not labels.get(TEAM_LABEL):
        raise UserError(f"{workload.get('kind')}/{dig(workload, 'metadata', 'name')} has no "
                        f"{TEAM_LABEL} label, which names the team the gate judges it for "
                        "(promoter renders it on every workload)")
    return {"team": str(labels[TEAM_LABEL]),
            "costCenter": str(labels.get(COST_CENTER_LABEL) or "unknown")}


def declared_intent(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A ModelDeployment document with what ``resources`` (one built overlay) declare."""
    resources = list(resources)
    _refuse_what_cannot_be_judged(resources)
    workloads = [r for r in resources if r.get("kind") in WORKLOADS]
    spec: dict[str, Any] = {
        "runtime": "kserve" if any(r.get("kind") == "InferenceService" for r in workloads)
        else "deployment"}
    metadata: dict[str, Any] = {}
    for resource in workloads:
        labels = dig(resource, "metadata", "labels") or {}
        annotations = dig(resource, "metadata", "annotations") or {}
        metadata["name"] = dig(resource, "metadata", "name")
        if labels.get("promoter.dev/runtime"):
            spec["runtime"] = str(labels["promoter.dev/runtime"])
        if annotations.get("promoter.dev/registered-model"):
            spec["model"] = {"name": str(annotations["promoter.dev/registered-model"]),
                             "version": str(annotations.get("promoter.dev/model-version", "0"))}
        spec["owner"] = _owner(resource, labels)
        pod = _pod_spec(resource) or {}
        gpu: dict[str, Any] = {}
        count = _gpu_count(pod)
        if count is not None:
            gpu["count"] = count
        types = _gpu_types(pod)
        if len(types) > 1:
            raise UserError(f"the workload may run on {len(types)} GPU products "
                            f"({', '.join(sorted(types))}); promoter places it on one")
        if types:
            gpu["type"] = types.pop()
        named = {name for c in (*_containers(pod), *_containers(pod, "initContainers"))
                 for name in _gpu_resources(c)}
        if len(named) > 1:
            raise UserError(f"the workload mixes GPU resources ({', '.join(sorted(named))}); "
                            "promoter renders whole GPUs or one MIG profile, which the gate "
                            "judges")
        if named and next(iter(named)).startswith(MIG_PREFIX):
            gpu["mig"] = next(iter(named))[len(MIG_PREFIX):]
        if gpu:
            spec["resources"] = {"gpu": gpu}
        regions = _regions(pod)
        if regions:
            spec["regions"] = regions
    scaling = declared_scaling(resources)
    if scaling:
        spec["scaling"] = scaling
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {k: v for k, v in metadata.items() if v}, "spec": spec}
