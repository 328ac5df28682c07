"""Whether an overlay reads anything outside the manifests tree (the CI gate refuses it).

The gate's job runs only on merge requests that change the manifests tree, and judges only the
overlays such a change can affect (core.policy_scope). A kustomization that reads a local path
outside the tree (``components: [../../../../ext/gpu]``) would let a later merge request that
edits only that path change what the overlay deploys, unchecked. So every local path an
overlay's kustomization names, and those of every kustomization it reaches, must resolve
(symbolic links followed) inside the tree; the first that does not is refused, fail closed.
The same walk tells which overlays a merge request's changes reach (``reached_paths``): an
overlay may read another model's directory, which selection by layout alone missed.

A remote reference (a URL, ``github.com/org/repo//dir?ref=v1``, ``git@host:org/repo``; in any
field: ``resources``, ``components``, ``bases``, a patch or values file, a Helm chart's
repository...) is refused too, for
the same reason: kustomize fetches it again at every build, so Argo CD deploys whatever the
remote holds when it syncs, while the gate judged what it held once, at merge request time,
and a commit there starts no gate run. Promoter renders none, so none is allowed, not even
one pinned to a commit SHA: what it holds may itself name a moving remote, which this walk
cannot follow.
Every ``generators``, ``transformers`` and ``validators`` entry is refused outright, inline or
a listed file: a builtin plugin's config (PatchTransformer, ConfigMapGenerator,
HelmChartInflationGenerator...) may name a remote file or chart, fetched at every build, and
any other kind runs an exec or KRM function plugin, which can fetch or inject anything.
Promoter renders none; use the kustomization's own fields (``patches``, ``configMapGenerator``...).
A key kustomize reads as a field spelled otherwise (``Transformers``, a patch's ``Path``:
Go's encoding/json matches field names regardless of case) is refused too, naming the file
and the key, as is any non-ASCII key there: the walk reads each field as spelled only.
A missing local reference is left to kustomize: it fails the build, which the gate denies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, SequenceNode

from promoter.core.kustomize_refs import (
    KUSTOMIZATION_FILES,
    broken_paths,
    is_remote,
    miscased_keys,
    misread_paths,
    plugin_entries,
    referenced_paths,
)
from promoter.errors import UserError
from promoter.yaml_read import READ_ERRORS, core_schema_yaml, one_line

MERGE_TAG, BINARY_TAG = "tag:yaml.org,2002:merge", "tag:yaml.org,2002:binary"
# A kustomization that cannot be read: the file, or its YAML (UnicodeDecodeError is a ValueError).
UNREADABLE: tuple[type[Exception], ...] = (*READ_ERRORS, OSError)


def manifests_tree(overlay: Path, root: Path) -> Path:
    """The tree ``overlay`` must stay in: the directory the gate was given, or the tree of the
    ``<tree>/<model>/overlays/<env>`` layout when that is wider (a single overlay given
    reads its model's base/)."""
    root = root.resolve()
    overlay = overlay.resolve()
    if overlay.parent.name == "overlays" and len(overlay.parents) > 2:
        layout = overlay.parents[2]
        if layout in root.parents:
            return layout
    return root


def _kustomization(directory: Path) -> Path | None:
    return next((directory / name for name in KUSTOMIZATION_FILES
                 if (directory / name).is_file()), None)


def _inside(path: Path, tree: Path) -> bool:
    return path == tree or tree in path.parents


def refuse_references_outside(overlay: Path, tree: Path) -> None:
    """UserError naming the first local path outside ``tree``, or remote reference, that
    ``overlay`` reads."""
    for _ in _walk(overlay, tree):
        pass


def reached_paths(overlay: Path, tree: Path) -> set[Path]:
    """Every directory ``overlay`` walks and every local path its kustomizations name, both as
    written (normalised) and resolved: what a change must touch to change what it builds
    (core.policy_scope). A missing path is kept too: a merge request may have deleted it. The
    walk stops at a path outside the tree, a remote reference or an unreadable kustomization,
    keeping what it reached until then: the policy check denies such an overlay, naming why."""
    found: set[Path] = set()
    try:
        for path in _walk(overlay, tree):
            found.add(path)
    except UserError:
        pass
    return found


def _walk(overlay: Path, tree: Path) -> Iterator[Path]:
    """The paths ``overlay`` reaches (see reached_paths), each directory before its
    kustomization is read; UserError at the first one outside ``tree`` or remote. The one walk
    both the refusal and the overlay selection use, so they cannot disagree on what an overlay
    reads."""
    tree = tree.resolve()
    pending, seen = [overlay], set()
    while pending:
        directory = pending.pop()
        real = directory.resolve()
        if real in seen:
            continue
        seen.add(real)
        if not _inside(real, tree):
            raise UserError(f"{directory} resolves to {real}, outside the manifests tree "
                            f"{tree}, which the CI gate does not watch")
        yield from (_written(directory), real)
        found = _kustomization(real)
        if found is None:
            continue
        kustomization = _load(found)
        _refuse_miscased(found, kustomization)
        plugins = plugin_entries(kustomization)
        if plugins:
            field, entry = plugins[0]
            raise UserError(
                f"{found} lists {_shown(entry)} under {field!r}: promoter renders no "
                "generators, transformers or validators, and a plugin's config (inline or in a "
                "listed file) can fetch a remote patch, file or chart at every build (a "
                "builtin's path: https://...) or run an exec/KRM function plugin, neither of "
                "which the CI gate sees; use the kustomization's own fields (patches, "
                "configMapGenerator, ...) with files under the tree")
        for where, value, shape in misread_paths(kustomization):
            raise UserError(
                f"{found} has {_shown_value(value)} at {where}, where kustomize reads {shape}"
                f"{' (a path)' if shape == 'text' else ''}: the CI gate judges only paths "
                "written as text there and cannot tell which path, if any, kustomize makes "
                "of this; write the path as quoted text or remove the entry")
        for field, entry in broken_paths(kustomization):
            raise UserError(
                f"{found} lists {entry!r} under {field!r}: a path holding a line break or "
                "another control character, which kustomize may still fetch as a remote "
                "reference while the CI gate reads it as none; write the path on one line")
        for reference in referenced_paths(kustomization):
            if is_remote(reference):
                raise UserError(
                    f"{found} references {reference!r}, a remote reference: kustomize fetches "
                    "it again at every build, so Argo CD deploys whatever it holds when it "
                    "syncs, while the CI gate judged it once and runs on changes under the "
                    "manifests tree only (a commit there changes what this overlay deploys "
                    "unchecked); vendor it under the tree")
            # Joined as kustomize joins it (Go's filepath.Join: `link/..` cancels as text,
            # before any symbolic link is followed), not as the OS resolves `link/..` (the
            # link's parent): else `deep/../../x`, with `deep` a link deeper in, named a
            # missing path to the gate while kustomize built a base outside the tree.
            target = _written(real / reference)
            # As written too: a symbolic link on the way is itself a file a change can edit.
            yield target
            if not target.exists():
                continue    # missing: kustomize fails the build, which the gate denies
            resolved = target.resolve()
            if not _inside(resolved, tree):
                raise UserError(
                    f"{found} references {reference!r} ({resolved}), outside the manifests "
                    f"tree {tree}: the CI gate runs on, and judges, changes under the tree "
                    "only, so a merge request editing that path would change what this "
                    "overlay deploys unchecked; move it under the tree")
            yield resolved
            if resolved.is_dir():
                pending.append(resolved)


def _refuse_miscased(found: Path, kustomization: Any) -> None:
    """UserError naming the first key kustomize may read as a field spelled otherwise
    (kustomize_refs.miscased_keys): the walk reads each field as spelled only."""
    for where, key, field in miscased_keys(kustomization):
        at = f" in {where}" if where else ""
        if not field:
            raise UserError(
                f"{found} has the non-ASCII key {key!r}{at}: kustomize reads field names "
                "regardless of case, with Unicode folding (the Kelvin sign \u212a is k, "
                "\u017f is s), so it may read a field the CI gate never checks; write field "
                "names in ASCII")
        raise UserError(
            f"{found} has the key {key!r}{at}: kustomize reads field names regardless of "
            f"case, so it reads this as {field!r}, which the CI gate checks only when spelled "
            f"so (a remote or out-of-tree reference there would pass unseen); write {field!r}")


def _shown(entry: Any) -> str:
    """A plugin field's entry for a message: a path as written, inline text by its first
    line."""
    text = entry if isinstance(entry, str) else repr(entry)
    first, _, rest = text.strip().partition("\n")
    return f"{first!r}" + (" (inline, ...)" if rest else "")


def _shown_value(value: Any) -> str:
    """A value that is not a path, for a message: as Python shows it, cut short."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _written(path: Path) -> Path:
    """``path`` absolute, ``..`` and ``.`` removed without following symbolic links."""
    return Path(os.path.normpath(path.absolute()))


def _load(path: Path) -> Any:
    """The kustomization at ``path`` as kustomize's go-yaml reads it (yaml_read: ``._5`` or
    ``2001-12-14`` is text, as a path there is to kustomize; ruamel's default reader made them
    a float and a date, which the walk passed over), after refusing what go-yaml reads
    otherwise than any ruamel reader (``_read_otherwise``). That check composes with ruamel's
    default resolver on purpose: it tags a plain ``<<`` key as a merge, as go-yaml does, where
    the core-schema reader reads the text ``<<``."""
    try:
        text = path.read_text()
        found = _read_otherwise(YAML(typ="safe", pure=True).compose(text))
        if found is not None:
            raise UserError(f"{path} holds {found}; write it out as plain keys and text")
        loaded = core_schema_yaml().load(text)
    except UNREADABLE as exc:
        raise UserError(f"cannot read {path}: {one_line(exc)}") from None
    return loaded if isinstance(loaded, dict) else {}


def _read_otherwise(node: Any, seen: set[int] | None = None) -> str | None:
    """What in the composed YAML ``node`` kustomize's reader takes otherwise than the walk's
    (yaml_read's core schema), or None. A ``<<`` merge key: the walk reads the text ``<<``
    (ruamel's default reader merges, letting an explicit key win over a merged one), while
    kustomize merges whichever comes later (``resources: [cm.yaml]`` then ``<<: {resources:
    [https://...]}``). A ``!!binary`` node: ruamel gives bytes, which the walk (reading
    strings) passes over, kustomize the text it encodes (``? !!binary cmVzb3VyY2Vz`` is a
    ``resources`` field)."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:
        return None
    seen.add(id(node))
    if node.tag == BINARY_TAG:
        return ("a !!binary node: kustomize decodes it into text (a field name such as "
                "resources, or a path or URL), which the CI gate would not read as one")
    children: list[Any] = []
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if key.tag == MERGE_TAG:
                return ("a YAML merge key (<<): kustomize's YAML reader applies it where it "
                        "stands, so it may override a field the CI gate read with another "
                        "value")
            children += (key, value)
    elif isinstance(node, SequenceNode):
        children = node.value
    return next((found for found in (_read_otherwise(child, seen) for child in children)
                 if found is not None), None)
