"""Validate Kubernetes resources: core kinds with kubernetes-validate, CRDs with their schemas."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate

KUBERNETES_VERSION = "1.32.0"
# (apiVersion, kind) → packaged CRD schema (see promoter/schemas/PROVENANCE.md).
CRD_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice_v1beta1.json",
    ("argoproj.io/v1alpha1", "ApplicationSet"): "applicationset_v1alpha1.json",
    ("argoproj.io/v1alpha1", "AppProject"): "appproject_v1alpha1.json",
    ("argoproj.io/v1alpha1", "Application"): "application_v1alpha1.json",
    ("policy.sigstore.dev/v1beta1", "ClusterImagePolicy"): "clusterimagepolicy_v1beta1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("kyverno.io/v1", "ClusterPolicy"): "clusterpolicy_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_v1alpha1.json",
}


@cache
def _crd_validator(filename: str) -> jsonschema.protocols.Validator:
    text = resources.files("promoter.schemas").joinpath(filename).read_text(encoding="utf-8")
    schema = json.loads(text)
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema)


def problems(resource: dict[str, Any]) -> list[str]:
    """Every schema violation in ``resource`` as ``field.path: message``; [] when valid."""
    api_version, kind = resource.get("apiVersion"), resource.get("kind")
    crd = CRD_SCHEMAS.get((str(api_version), str(kind)))
    if crd is not None:
        errors = sorted(_crd_validator(crd).iter_errors(resource), key=lambda e: list(e.path))
        return [f"{_path(error.absolute_path)}: {error.message}" for error in errors]
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_path(exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema known for apiVersion {api_version} kind {kind}"]
    return []


def _path(parts: Any) -> str:
    return ".".join(str(part) for part in parts) or "(resource)"
