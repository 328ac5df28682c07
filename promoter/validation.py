"""`promoter validate`: build every overlay with real Kustomize and schema-check each resource."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter.adapters import kustomize, schemas
from promoter.errors import UserError

# CRDs that runtimes render besides those promoter.adapters.schemas knows: (apiVersion, kind)
# → packaged schema (promoter/schemas/PROVENANCE.md).
RUNTIME_CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
}


@dataclass
class OverlayReport:
    overlay: Path
    resources: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_overlays(root: Path) -> list[Path]:
    """``<model>/overlays/<env>`` directories under root (or root itself if it is one)."""
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    overlays = sorted(path.parent for path in root.rglob("kustomization.yaml")
                      if path.parent.parent.name == "overlays")
    if not overlays and (root / "kustomization.yaml").is_file():
        overlays = [root]
    return overlays


def validate_overlay(overlay: Path) -> OverlayReport:
    report = OverlayReport(overlay)
    try:
        stream = kustomize.build(overlay)
    except UserError as exc:
        report.problems.append(exc.message)
        return report
    try:
        documents = [doc for doc in YAML(typ="safe", pure=True).load_all(stream) if doc]
    except YAMLError as exc:
        report.problems.append(f"kustomize output is not YAML: {exc}")
        return report
    report.resources = len(documents)
    for document in documents:
        report.problems.extend(f"{_identify(document)}: {problem}"
                               for problem in resource_problems(document))
    return report


def validate_tree(root: Path) -> list[OverlayReport]:
    overlays = find_overlays(root)
    if not overlays:
        raise UserError(f"no overlays found under {root}",
                        hint="expected <model>/overlays/<env>/kustomization.yaml")
    return [validate_overlay(overlay) for overlay in overlays]


def resource_problems(document: dict[str, Any]) -> list[str]:
    """Schema violations of one built resource, ``field.path: message`` each."""
    crd = RUNTIME_CRD_SCHEMAS.get((str(document.get("apiVersion")), str(document.get("kind"))))
    if crd is None:
        return schemas.problems(document)
    errors = sorted(_validator(crd).iter_errors(document), key=lambda e: list(e.path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(resource)'}: {e.message}"
            for e in errors]


@cache
def _validator(filename: str) -> Any:
    text = resources.files("promoter.schemas").joinpath(filename).read_text(encoding="utf-8")
    schema = json.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


def _identify(document: dict[str, Any]) -> str:
    name = (document.get("metadata") or {}).get("name", "?")
    return f"{document.get('kind', '?')}/{name}"
