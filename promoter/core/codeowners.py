"""The ``CODEOWNERS`` entries of each model directory, updated by every promotion. Pure.

A promotion of model directory ``<root>/<name>/`` to ``env`` sets three lines (GitLab CODEOWNERS
syntax: a path, then its owners) in one block of the repository's root ``CODEOWNERS``:

    /manifests/fraud-detector/ @risk/ml @risk/ml-leads        owners in any environment
    /manifests/fraud-detector/base/ @risk/ml @risk/ml-leads   owners of every environment
                                                              building on the shared base
    /manifests/fraud-detector/overlays/production/ @risk/ml-leads   owners for this environment

from ``policy.teams.<team>.approvers.<env>.codeowners``. In GitLab the last matching line of a
section wins, so the block goes at the end of the default section (before the first
``[Section]`` header, or at the end of the file): after the ``promoter gitops init`` block, whose
``/manifests/*/overlays/<env>/`` lines it refines, and after a catch-all such as ``* @team``.
Only lines of this model's paths change; everything else is kept byte for byte, and a re-run
with the same owners yields the same text. Paths and owners are checked before
they become lines, so no value can start a line of its own.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from promoter.core.naming import name_problem
from promoter.errors import ConfigError

PATH = "CODEOWNERS"
BEGIN = ("# >>> promoter: owners of each model directory, written by promotions "
         "(policy.teams.<team>.approvers.<env>.codeowners)")
END = "# <<< promoter: end of model directory owners"
# GitLab owners: @user, @group/subgroup, @@role, or an e-mail address; no whitespace or '#'.
_OWNER = re.compile(r"^(@{1,2}[A-Za-z0-9_.][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.][A-Za-z0-9_.\-]*)*"
                    r"|[A-Za-z0-9_.+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+)$")
_ROOT = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
_SECTION = re.compile(r"^\^?\[")  # a GitLab section header: [Name] or ^[Name] (optional)
_ENTRY_PATH = re.compile(r"^/([A-Za-z0-9_.\-]+/)+$")


def owner_problem(owner: str) -> str | None:
    if _OWNER.fullmatch(owner):
        return None
    return (f"{owner!r} is not a CODEOWNERS owner (@user, @group/subgroup, @@role or an "
            "e-mail address)")


def model_entries(root: str, name: str, env: str, owners: Mapping[str, Sequence[str]],
                  other_envs: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
    """The lines a promotion of ``name`` to ``env`` owns: path -> owners (empty: no line).
    ``owners`` maps each environment to the team's codeowners there; ``other_envs`` are the
    other environments whose overlays build on the deployment's base (on the target branch).
    A base change changes what each of them runs, so the base line names all their owners."""
    problem = name_problem(name)
    if problem or not _ROOT.fullmatch(root.strip("/")):
        raise ConfigError(f"no CODEOWNERS entry for {root!r}/{name!r}: "
                          f"{problem or 'the manifests directory is not a plain path'}")
    for owner in (owner for listed in owners.values() for owner in listed):
        problem = owner_problem(owner)
        if problem:
            raise ConfigError(problem, hint="fix policy.teams.*.approvers.*.codeowners")
    directory = f"/{root.strip('/')}/{name}/"
    every = tuple(sorted({owner for listed in owners.values() for owner in listed}))
    building_on_base = {env, *other_envs}
    return {directory: every,
            f"{directory}base/": tuple(sorted({owner for where in building_on_base
                                               for owner in owners.get(where, ())})),
            f"{directory}overlays/{env}/": tuple(sorted(set(owners.get(env, ()))))}


def upsert(existing: str | None, entries: Mapping[str, tuple[str, ...]]) -> str | None:
    """``existing`` with the block's line of each path in ``entries`` set (or removed, for
    empty owners). None when there is nothing to write (no file and no owners) or when the
    file's block is broken (one marker without the other): then it is left alone."""
    for path, owners in entries.items():
        problems = [owner_problem(owner) for owner in owners]
        if not _ENTRY_PATH.fullmatch(path) or any(problems):
            raise ConfigError(f"refusing CODEOWNERS line for {path!r}: "
                              f"{next((p for p in problems if p), 'not a directory path')}")
    lines = existing.splitlines(keepends=True) if existing else []
    begin = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    end = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    if len(begin) > 1 or len(end) > 1 or len(begin) != len(end) or (begin and end[0] < begin[0]):
        return None
    if begin:
        start, stop = begin[0], end[0]
        kept = lines[start + 1:stop]
    else:
        # the end of the default section: before the first section header, or the end
        start = stop = next((i for i, line in enumerate(lines) if _SECTION.match(line)),
                            len(lines))
        kept = []
    block: dict[str, str] = {}
    others: list[str] = []
    for line in kept:
        fields = line.split()
        if fields and fields[0] in entries:
            continue  # this promotion's paths: set below, once
        if fields and not fields[0].startswith("#") and fields[0] not in block:
            block[fields[0]] = line if line.endswith("\n") else line + "\n"
        else:
            others.append(line)
    for path, owners in entries.items():
        block.pop(path, None)
        if owners:
            block[path] = f"{path} {' '.join(owners)}\n"
    if not block and not others and not begin:
        return existing  # nothing to add: the file stays as it is (or absent)
    body = [BEGIN + "\n", *others, *(block[path] for path in sorted(block)), END + "\n"]
    head = lines[:start]
    if head and not head[-1].endswith("\n"):
        head[-1] += "\n"
    tail = lines[stop + 1:] if begin else lines[stop:]
    return "".join(head + body + tail)
