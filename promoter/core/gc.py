"""Garbage collection of the GitOps tree: which overlays (and bases) nothing needs any more.

Pure planning over facts the caller gathered: the target branch's files and, per overlay, what
the registry says now. An overlay goes when its registered model or its version no longer
exists, when no alias or stage points the environment at the model any more, or when it is
in an idle-collected environment (staging) and nothing was promoted there for the TTL: its
version live there unchanged that long, its trigger still naming that version (one naming
another is a promotion about to update it, its job perhaps still queued) and no promotion
into that environment under way (the caller asks: base_reuse.promoting_into). A base
goes with its last overlay, or alone when no overlay is left beside it (two environments
decommissioned at once: each removal MR saw the other's overlay and kept the base), only when
no other file stays under its ``overlays/`` (overlays_left: a hand-made overlay GC does not
parse still builds on it) and the caller found nothing about to use it again; an
overlay's forecast plot goes with the overlay. Directories whose base promoter did not write
(no ``promoter.dev/registered-model`` annotation) are never touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from promoter.core import tree_facts

# The audit entry each GC proposal is recorded as (promoter.garbage): its MR's iid and head and
# the overlays that head ``removes``. Its merge is recorded from it (service.outcomes); the MR
# sweep follows the GC MRs whose outcome is not recorded yet (state.gc_pending).
PROPOSED = "gc.proposed"

@dataclass(frozen=True)
class Overlay:
    name: str                 # deployment name (directory)
    env: str
    model: str                # the registered model its base names
    version: str | None       # the version the overlay pins


@dataclass(frozen=True)
class RegistryView:
    """What the registry says about one overlay's model now (gathered by the caller)."""

    model_exists: bool
    version_exists: bool
    pointed_at: str | None    # what the environment's alias/stage points at now, if anything


@dataclass(frozen=True)
class Removal:
    prefix: str               # directory to remove, ending in "/"
    reason: str
    files: tuple[str, ...] = ()   # single files that go with it (the overlay's forecast plot)
    # Planned because no alias or stage pointed the model at the environment: a trigger set
    # back before the merge makes it no decommission (service.gc_outcomes). Not so for an
    # overlay removed while its trigger still points there (idle past its TTL, version gone).
    untargeted: bool = False
    # Planned because idle past its TTL: a promotion into its environment claimed after the
    # plan looked puts it back (garbage._claimed_since).
    idle: bool = False


def _under(root: str, path: str) -> list[str] | None:
    """``path``'s segments below ``root`` (``<name>/overlays/<env>/…``), None outside it."""
    return path.removeprefix(f"{root}/").split("/") if path.startswith(f"{root}/") else None


# GC's MR description records what its head removes in promoter's own marker (an HTML
# comment: escaped outside text can never forge one), read back by a promotion that must know
# whether the open GC MR removes the base it builds on (core.base_reuse).
_REMOVES = re.compile(r"<!-- promoter-gc-removes (\[[^<>]*\]) -->")


_JSON_ESCAPES = str.maketrans({"-": "\\u002d", "<": "\\u003c", ">": "\\u003e",
                               "&": "\\u0026"})


def removals_marker(removals: Iterable[Removal]) -> str:
    # JSON with "-", "<", ">" and "&" escaped: no directory name (they come from the target
    # branch) can end the comment ("-->") early or open another one.
    listed = json.dumps(sorted(removal.prefix for removal in removals)).translate(_JSON_ESCAPES)
    return f"<!-- promoter-gc-removes {listed} -->"


def marked_removals(description: str) -> frozenset[str] | None:
    """The prefixes GC's marker in ``description`` says its head removes; None when there is
    no readable marker (an MR written before markers, or a description someone edited)."""
    found = _REMOVES.search(description)
    if found is None:
        return None
    try:
        prefixes = json.loads(found.group(1))
    except ValueError:
        return None
    if not isinstance(prefixes, list):
        return None
    return frozenset(p for p in prefixes if isinstance(p, str))


def kustomizations(root: str, paths: Iterable[str]) -> list[str]:
    """Of the paths on the branch, the kustomization files ``overlays`` and ``orphan_bases``
    read (each base's and each overlay's): the only files GC reads."""
    return sorted(path for path in paths if (relative := _under(root, path)) is not None
                  and relative[-1] == "kustomization.yaml"
                  and (relative[1:] == ["base", "kustomization.yaml"]
                       or (len(relative) == 4 and relative[1] == "overlays")))


def overlays(root: str, files: Mapping[str, str]) -> list[Overlay]:
    """The overlays of directories promoter owns, from the target branch's files."""
    found = []
    for path, text in sorted(files.items()):
        relative = _under(root, path)
        if relative is None or len(relative) != 4 or relative[1] != "overlays" \
                or relative[3] != "kustomization.yaml":
            continue
        name, env = relative[0], relative[2]
        base = files.get(tree_facts.base_kustomization(root, name))
        owner = tree_facts.annotation(base, tree_facts.REGISTERED_MODEL) if base else None
        if owner is None:
            continue  # not promoter's directory: never collected
        found.append(Overlay(name, env, owner,
                             tree_facts.annotation(text, tree_facts.MODEL_VERSION)))
    return found


def overlay_dirs(root: str, files: Iterable[str]) -> frozenset[tuple[str, str]]:
    """(name, env) of every overlay directory holding any file (``files``: paths on the
    branch), whoever wrote it: what a GC merge left in place is still deployed."""
    return frozenset((relative[0], relative[2]) for path in files
                     if (relative := _under(root, path)) is not None and len(relative) >= 4
                     and relative[1] == "overlays")


@dataclass(frozen=True)
class OrphanBase:
    name: str                 # deployment name (directory)
    model: str                # the registered model its base names


def orphan_bases(root: str, paths: Iterable[str],
                 files: Mapping[str, str]) -> list[OrphanBase]:
    """The bases promoter wrote (their kustomization among ``files``) with no overlay left
    beside them. Any file under ``<name>/overlays/`` (``paths``: every file on the branch, binary
    ones included) means an overlay is there, promoter's or not, whatever its file is called
    (``kustomization.yml``, ``Kustomization``) and however deep: only a name with nothing under
    overlays/ is an orphan. The caller still checks the base is not about to be used again
    (garbage.collect)."""
    owned: dict[str, str] = {}
    for path, text in files.items():
        relative = _under(root, path)
        if relative is not None and relative[1:] == ["base", "kustomization.yaml"]:
            model = tree_facts.annotation(text, tree_facts.REGISTERED_MODEL)
            if model is not None:
                owned[relative[0]] = model
    listed = tuple(paths)
    return [OrphanBase(name, owned[name]) for name in sorted(owned)
            if not overlays_left(root, name, listed)]


def overlays_left(root: str, name: str, paths: Iterable[str],
                  leaving: Iterable[str] = ()) -> bool:
    """Whether any file under ``<name>/overlays/`` (``paths``: files on the branch) lies
    outside the overlay directories ``leaving`` (prefixes ending in "/"): the base stays for
    it. Any file counts, promoter's or not, whatever it is called and however deep, since
    Kustomize reads ``kustomization.yml`` and ``Kustomization`` too and a hand-made overlay
    builds on ``../../base`` as well. The one rule GC (orphans, and a base whose last parsed
    overlay goes) and a decommission (core.decommission) keep a base by."""
    overlays, going = f"{root}/{name}/overlays/", tuple(leaving)
    return any(path.startswith(overlays) and not path.startswith(going) for path in paths)


def plan(root: str, found: list[Overlay], view: Callable[[Overlay], RegistryView],
         idle_since: Callable[[Overlay], float | None], idle_envs: frozenset[str],
         ttl_seconds: float | None, now: float, *, paths: Iterable[str],
         orphans: Sequence[OrphanBase],
         base_wanted: Callable[[str, str, frozenset[str]], bool] = lambda *_: False,
         promoting: Callable[[Overlay], bool] = lambda _: False) -> list[Removal]:
    """What goes: ``found`` overlays nothing needs (one idle past the TTL only while
    ``promoting(overlay)``, asked last, finds no promotion into its environment under way),
    bases whose last overlay goes unless a
    file outside the overlays going stays under their ``overlays/`` (``paths``: every file on
    the branch; ``found`` holds only ``overlays/<env>/kustomization.yaml``) or
    ``base_wanted(name, model, environments leaving)`` (a promotion into another environment
    under way would build on it), and the ``orphans`` (orphan_bases, less those about to be
    used again)."""
    removals: list[Removal] = []
    kept: dict[str, int] = {}
    for overlay in found:
        seen = view(overlay)
        reason = _reason(overlay, seen)
        idle = None if reason is not None else _idle_days(
            overlay, seen, idle_since(overlay), idle_envs, ttl_seconds, now, promoting)
        if idle is not None:
            reason = f"idle in {overlay.env} for {idle:.1f} days (gc.staging_ttl_seconds)"
        if reason is None:
            kept[overlay.name] = kept.get(overlay.name, 0) + 1
        else:
            removals.append(Removal(
                f"{root}/{overlay.name}/overlays/{overlay.env}/", reason,
                (tree_facts.forecast_plot(root, overlay.name, overlay.env),),
                untargeted=seen.pointed_at is None, idle=idle is not None))
    listed, going = tuple(paths), [removal.prefix for removal in removals]
    for name in sorted({overlay.name for overlay in found} - set(kept)):
        leaving = [overlay for overlay in found if overlay.name == name]
        if overlays_left(root, name, listed, going):
            continue  # a hand-made overlay beside promoter's still builds on the base
        if not base_wanted(name, leaving[0].model, frozenset(o.env for o in leaving)):
            removals.append(Removal(f"{root}/{name}/base/", "no environment remains"))
    for orphan in orphans:
        removals.append(Removal(f"{root}/{orphan.name}/base/", "no overlay uses it (its "
                                "environments were decommissioned separately)"))
    return removals


def _reason(overlay: Overlay, registry: RegistryView) -> str | None:
    """Why ``overlay`` goes whatever its environment: its model or version gone, or nothing
    pointing the environment at the model."""
    if not registry.model_exists:
        return f"registered model {overlay.model!r} no longer exists"
    if overlay.version is not None and not registry.version_exists:
        if registry.pointed_at is not None:
            # The environment names another version (MLflow drops a deleted version's
            # aliases): a promotion of it updates this overlay, its MR perhaps open already;
            # removed first, that MR would conflict and the environment would go dark.
            return None
        return f"version {overlay.version} of {overlay.model!r} no longer exists"
    if registry.pointed_at is None:
        return f"no alias or stage points {overlay.model!r} at {overlay.env} any more"
    return None


def _idle_days(overlay: Overlay, registry: RegistryView, idle_since: float | None,
               idle_envs: frozenset[str], ttl_seconds: float | None, now: float,
               promoting: Callable[[Overlay], bool]) -> float | None:
    """How long ``overlay`` has sat idle, when past the TTL of an idle-collected environment;
    None otherwise. Idle: the version it pins live unchanged that long, and nothing about to
    change it. A trigger naming another version is a promotion coming (its job perhaps still
    queued), and one under way (claimed, its MR open: ``promoting``, asked last) updates this
    overlay: removed first, the promotion's MR would conflict with the target branch and
    leave the environment without an overlay while its trigger names a version."""
    if (ttl_seconds is not None and overlay.env in idle_envs and idle_since is not None
            and now - idle_since > ttl_seconds and registry.pointed_at == overlay.version
            and not promoting(overlay)):
        return (now - idle_since) / 86400
    return None
