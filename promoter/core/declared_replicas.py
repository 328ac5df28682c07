"""The replica bounds a built overlay declares, for the CI gate's quota check (pure).

The most replicas any resource allows is what the workload may run: the HPA's, a KEDA
ScaledObject's (KEDA's default of 100 when it names no ``maxReplicaCount``), the
InferenceService predictor's (bounded by KServe's rules below) or the Deployment's own
``replicas`` until something scales it. The fewest any resource allows is the lowest minimum
named, a ScaledObject's at KEDA's default of 0 when it names no ``minReplicaCount`` (so the
intent's minReplicas >= 1 denies it). A ScaledObject's ``idleReplicaCount`` is refused with its
own reason: KEDA scales to it, below minReplicaCount, whenever no trigger is active. What the
manifests leave unbounded is refused (``UserError``), never judged at a default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from promoter.core.documents import dig
from promoter.errors import UserError

# KEDA's maxReplicaCount when a ScaledObject leaves it out (keda.sh ScaledObject spec).
KEDA_DEFAULT_MAX_REPLICAS = 100
# And its minReplicaCount: scale to zero while no trigger is active (keda.sh ScaledObject spec).
KEDA_DEFAULT_MIN_REPLICAS = 0
# KServe's deployment modes that scale the predictor with an HPA (or not at all): there the
# HPA's maxReplicas is the predictor's, raised to its minReplicas (at least 1) when lower or
# unset (KServe's hpa reconciler). In Serverless/Knative mode (the cluster default when the
# annotation is absent) an unset maxReplicas leaves Knative's max-scale unbounded.
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
BOUNDED_MODES = frozenset({"RawDeployment", "Standard"})
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"


def declared_scaling(resources: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``minReplicas`` (the lowest any resource names) and ``maxReplicas`` (the most any
    allows), each only when some resource names one."""
    lows: list[int] = []
    highs: list[int] = []
    for resource in resources:
        kind, spec = resource.get("kind"), dig(resource, "spec")
        if kind == "InferenceService":
            low, high = _predictor_bounds(resource, resources)
            lows.extend([low] if low is not None else [])
            highs.append(high)
        elif kind == "HorizontalPodAutoscaler":
            lows.extend(_whole_at(spec, "minReplicas"))
            highs.extend(_whole_at(spec, "maxReplicas"))
        elif kind == "ScaledObject":
            lows.append(_keda_bound(resource, "minReplicaCount", KEDA_DEFAULT_MIN_REPLICAS))
            _refuse_idle_replicas(resource, lows[-1])
            highs.append(_keda_bound(resource, "maxReplicaCount", KEDA_DEFAULT_MAX_REPLICAS))
        elif kind == "Deployment":
            highs.extend(_whole_at(spec, "replicas"))
    scaling = {}
    if lows:
        scaling["minReplicas"] = min(lows)
    if highs:
        scaling["maxReplicas"] = max(highs)
    return scaling


def _predictor_bounds(service: Mapping[str, Any],
                      resources: Sequence[Mapping[str, Any]]) -> tuple[int | None, int]:
    """The predictor's minReplicas (None when unset) and the most replicas KServe may run it
    at. An unset (or 0) maxReplicas is bounded only in an HPA mode; elsewhere, and with an
    external autoscaler the overlay does not hold, nothing in the manifests bounds it."""
    name = f"InferenceService/{dig(service, 'metadata', 'name')}"
    annotations = dig(service, "metadata", "annotations") or {}
    predictor = dig(service, "spec", "predictor")
    low = next(iter(_whole_at(predictor, "minReplicas")), None)
    high = next(iter(_whole_at(predictor, "maxReplicas")), 0)
    if annotations.get(AUTOSCALER_CLASS) == "external" and not any(
            r.get("kind") == "ScaledObject" for r in resources):
        raise UserError(f"{name} is scaled by an external autoscaler "
                        f"({AUTOSCALER_CLASS}: external) that the overlay does not hold, so "
                        "nothing in it bounds its replicas")
    if high > 0:
        return low, high
    if annotations.get(DEPLOYMENT_MODE) in BOUNDED_MODES:
        return low, max(low or 1, 1)
    mode = annotations.get(DEPLOYMENT_MODE) or "the cluster's default (Serverless unless " \
        "configured)"
    raise UserError(f"{name} sets no predictor maxReplicas in deployment mode {mode}, where "
                    "Knative scales it without bound; set maxReplicas (promoter renders it, "
                    f"with {DEPLOYMENT_MODE}: Standard)")


def _keda_bound(scaled_object: Mapping[str, Any], field: str, default: int) -> int:
    """A ScaledObject's replica bound ``field``, else KEDA's ``default`` for it (then applied
    by KEDA alone, whatever any other resource says: 100 replicas at most, 0 at least)."""
    named = dig(scaled_object, "spec", field)
    if named is None:
        return default
    if not _whole(named):
        raise UserError(f"ScaledObject/{dig(scaled_object, 'metadata', 'name')} has "
                        f"{field} {named!r}, not a whole number the gate can judge")
    return named


def _refuse_idle_replicas(scaled_object: Mapping[str, Any], min_replicas: int) -> None:
    """A ScaledObject naming ``idleReplicaCount`` (promoter renders none, and bounded() drops a
    carried-forward one): KEDA scales its target to that count whenever no trigger is active,
    and requires it below ``minReplicaCount`` (keda.sh ScaledObject spec; only 0 works), so
    the workload runs fewer replicas than its minReplicas allows, or none. One not below
    ``minReplicaCount`` KEDA rejects, leaving the workload unscaled: refused as well."""
    idle = dig(scaled_object, "spec", "idleReplicaCount")
    if idle is None:
        return
    name = f"ScaledObject/{dig(scaled_object, 'metadata', 'name')}"
    if not _whole(idle):
        raise UserError(f"{name} has idleReplicaCount {idle!r}, not a whole number the gate "
                        "can judge (promoter renders no idleReplicaCount)")
    if idle < min_replicas:
        raise UserError(f"{name} sets idleReplicaCount {idle}, below its minReplicaCount "
                        f"{min_replicas} (the intent's minReplicas): KEDA scales the workload "
                        f"to {idle} replicas whenever no trigger is active; remove it "
                        "(promoter renders none)")
    raise UserError(f"{name} sets idleReplicaCount {idle}, not below its minReplicaCount "
                    f"{min_replicas}: KEDA rejects such a ScaledObject and scales nothing; "
                    "remove it (promoter renders none)")


def _whole_at(source: Any, key: str) -> list[int]:
    """``source[key]`` when it is a whole number (not a bool), as a list of none or one."""
    value = dig(source, key)
    return [value] if _whole(value) else []


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
