"""`promoter validate`: build every overlay with real Kustomize and schema-check each resource.

The Kustomize run and the schema checks are adapters; they come in as a ``ManifestChecker``
built by the composition root (``composition.manifest_checker()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promoter.core.naming import kserve_host_problem
from promoter.errors import UserError
from promoter.yaml_read import load_documents


@dataclass(frozen=True)
class ManifestChecker:
    build: Callable[[Path], str]  # overlay directory → `kustomize build` output (UserError)
    problems: Callable[[dict[str, Any]], list[str]]  # one resource → its schema problems


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


def validate_overlay(overlay: Path, checker: ManifestChecker) -> OverlayReport:
    report = OverlayReport(overlay)
    try:
        documents = [doc for doc in load_documents(checker.build(overlay),
                                                   what="kustomize output") if doc]
    except UserError as exc:   # it did not build, or its output cannot be read
        report.problems.append(exc.message)
        return report
    report.resources = len(documents)
    for document in documents:
        report.problems.extend(f"{_identify(document)}: {problem}"
                               for problem in checker.problems(document))
        report.problems.extend(f"{_identify(document)}: {problem}"
                               for problem in _reconcile_problems(document))
    return report


def _reconcile_problems(document: dict[str, Any]) -> list[str]:
    """What a schema allows but the controller then refuses: KServe's host name of an
    InferenceService (a hand-edited name or namespace the render-time check never saw)."""
    metadata = document.get("metadata") or {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if document.get("kind") != "InferenceService" or not isinstance(name, str) \
            or not isinstance(namespace, str):
        return []
    problem = kserve_host_problem(name, namespace)
    return [problem] if problem else []


def validate_tree(root: Path, checker: ManifestChecker) -> list[OverlayReport]:
    overlays = find_overlays(root)
    if not overlays:
        raise UserError(f"no overlays found under {root}",
                        hint="expected <model>/overlays/<env>/kustomization.yaml")
    return [validate_overlay(overlay, checker) for overlay in overlays]


def _identify(document: dict[str, Any]) -> str:
    name = (document.get("metadata") or {}).get("name", "?")
    return f"{document.get('kind', '?')}/{name}"
