"""Desired files vs. what a branch holds → the create/update/delete actions of one commit.

Pure: the callers read the tree; this module only compares. Identical inputs give no actions,
which is what makes a re-promotion of the same version a no-op.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping

from promoter.errors import UserError
from promoter.ports.forge import Action
from promoter.ports.git import FileContent


def check_path(path: str) -> str:
    """Refuse paths that could escape the repository or be read two ways."""
    normal = posixpath.normpath(path)
    if (not path or path != normal or normal.startswith(("/", "../")) or normal == ".."
            or "\\" in path or any(ord(ch) < 32 for ch in path) or "/.git/" in f"/{path}/"):
        raise UserError(f"refusing file path {path!r}: paths must be relative, normalised and "
                        "stay inside the repository")
    return path


def under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path.startswith(prefix) for prefix in prefixes)


def same(existing: FileContent, content: FileContent) -> bool:
    """Equal as stored: text compares as text; where either side is bytes, as UTF-8 bytes
    (a forge reads a binary file back as bytes, and a UTF-8 one as text)."""
    if isinstance(existing, str) and isinstance(content, str):
        return existing == content
    as_bytes = [side.encode("utf-8") if isinstance(side, str) else side
                for side in (existing, content)]
    return as_bytes[0] == as_bytes[1]


def plan(desired: Mapping[str, FileContent | None], current: Mapping[str, FileContent],
         managed_prefixes: Iterable[str] = ()) -> list[Action]:
    """Actions that turn ``current`` into ``desired``, sorted by path.

    ``current`` must hold every existing file under ``managed_prefixes`` and every existing
    file named in ``desired``. A managed file absent from ``desired`` is deleted; a path mapped
    to None is deleted when it exists. Prefixes end with "/" so ``a/`` never matches ``ab/``.
    Content is text (str) or binary (bytes); a file is updated only when it differs (``same``),
    so identical binary content plans no action either.
    """
    prefixes = tuple(p if p.endswith("/") else p + "/" for p in managed_prefixes)
    actions: list[Action] = []
    for path, content in desired.items():
        check_path(path)
        existing = current.get(path)
        if content is None:
            if existing is not None:
                actions.append(Action(path, "delete"))
        elif existing is None:
            actions.append(Action(path, "create", content))
        elif not same(existing, content):
            actions.append(Action(path, "update", content))
    for path in current:
        if path not in desired and under(path, prefixes):
            actions.append(Action(path, "delete"))
    return sorted(actions)


def applied(files: Mapping[str, FileContent], actions: Iterable[Action]) -> dict[str, FileContent]:
    """``files`` after ``actions`` (a tree snapshot and the commit planned on top of it)."""
    result = dict(files)
    for action in actions:
        if action.kind == "delete":
            result.pop(action.path, None)
        elif action.content is not None:
            result[action.path] = action.content
    return result


def same_tree(one: Mapping[str, FileContent], other: Mapping[str, FileContent]) -> bool:
    return one.keys() == other.keys() and all(same(one[path], other[path]) for path in one)


def paths_to_read(desired: Mapping[str, FileContent | None]) -> list[str]:
    return sorted(check_path(path) for path in desired)


def summary(actions: Iterable[Action]) -> dict[str, list[str]]:
    """Paths by kind, for the MR description's "what changes" section."""
    grouped: dict[str, list[str]] = {"create": [], "update": [], "delete": []}
    for action in actions:
        grouped[action.kind].append(action.path)
    return grouped
