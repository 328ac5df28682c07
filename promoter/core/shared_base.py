"""What one environment's promotion does to the other environments of its deployment. Pure.

Every environment's overlay (``<name>/overlays/<env>/``) builds on the one ``<name>/base/``,
and every promotion re-renders that base from the new version's intent. A version change
alone stays in its overlay; but a change of shared intent (owner or cost labels, description,
ports and probes of a runtime descriptor, configured runtime images) rewrites the base, and so
what every other environment runs once the merge request merges. This module decides, from the
target branch's tree (read by the caller through the provider port) and the rendered files:

- ``refuse_runtime_switch``: a new runtime replaces the base's workload kind (Deployment →
  InferenceService), which the other environments' overlays still patch: their builds break;
- ``affected_environments``: which other environments a base change reaches, so the merge
  request is reviewed as a change of each of them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from promoter.core import changes, tree_facts
from promoter.core.intent import InvalidIntent
from promoter.ports.git import FileContent

RUNTIME_LABEL = "promoter.dev/runtime"   # on every workload promoter renders into the base


@dataclass(frozen=True)
class DeploymentTree:
    """One deployment's files on the target branch: its base and the environments with an
    overlay there (those whose running deployment builds on the base)."""

    base: Mapping[str, FileContent]      # path relative to the manifests root -> content
    overlays: tuple[str, ...]            # environment names, sorted


def deployment_tree(files: Mapping[str, FileContent], root: str, name: str) -> DeploymentTree:
    """``files`` (the target branch under ``<root>/<name>/``, paths from the repository root)
    as a DeploymentTree with paths relative to ``root``, as the renderer names them."""
    prefix = f"{root}/"
    relative = {path.removeprefix(prefix): text for path, text in files.items()
                if path.startswith(f"{prefix}{name}/")}
    base = {path: text for path, text in relative.items() if path.startswith(f"{name}/base/")}
    overlays = sorted({path.split("/")[2] for path in relative
                       if path.startswith(f"{name}/overlays/")
                       and path.endswith("/kustomization.yaml") and path.count("/") == 3})
    return DeploymentTree(base, tuple(overlays))


def base_runtime(base: Mapping[str, FileContent]) -> str | None:
    """The runtime the base's workloads declare (their ``promoter.dev/runtime`` label), or
    None when no base file says (no base yet, or one promoter did not write)."""
    for path in sorted(base):
        text = base[path]
        value = tree_facts.annotation(text, RUNTIME_LABEL) if isinstance(text, str) else None
        if value:
            return value
    return None


def refuse_runtime_switch(name: str, env: str, runtime: str, tree: DeploymentTree) -> None:
    """InvalidIntent when other environments of ``name`` run another runtime than ``runtime``:
    their overlays patch the old runtime's workload, which the new base no longer has."""
    running = base_runtime(tree.base)
    others = [other for other in tree.overlays if other != env]
    if running is None or running == runtime or not others:
        return
    where = ", ".join(others)
    # The ways out go in the message itself: it is what MLflow's status reason shows.
    raise InvalidIntent(
        f"deployment {name!r} runs runtime {running!r} in {where}, and this version asks for "
        f"{runtime!r}: the shared base would switch under the overlays of {where}, which "
        f"patch a {running!r} workload, and break them. Promote the new runtime under "
        f"another deployment name (metadata.name in the intent, or the deploy.name tag), or "
        f"decommission {name!r} from {where} first")


@dataclass(frozen=True)
class SharedChange:
    """A base change and the other environments it reaches (empty: the change is confined)."""

    environments: tuple[str, ...] = ()   # other environments whose overlay builds on the base
    paths: tuple[str, ...] = ()          # base files created, changed or removed (root-relative)

    def __bool__(self) -> bool:
        return bool(self.environments)


def affected_environments(old_base: Mapping[str, FileContent],
                          new_base: Mapping[str, FileContent], overlays: Collection[str],
                          env: str) -> SharedChange:
    """The other environments (of ``overlays``) that a change from ``old_base`` to
    ``new_base`` reaches, with the base files that change; nothing when the base is the same
    or no other environment builds on it (the first environment, or the only one)."""
    paths = tuple(sorted(
        path for path in set(old_base) | set(new_base)
        if path not in old_base or path not in new_base
        or not changes.same(old_base[path], new_base[path])))
    others = tuple(sorted(other for other in overlays if other != env))
    if not paths or not others:
        return SharedChange()
    return SharedChange(others, paths)
