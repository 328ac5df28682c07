"""Which version of each model was live in an environment at a given time, from the audit trail.

Pure: a replay of audit entries in order. A merged promotion makes its version live in its
environment; a merged decommission of that version (or of none named) removes the model
from it. (A rollback is a promotion of an older version, so it needs no case of its own.)
Merging the version that is already live again (a re-render of the same version) does not
make it newly live, nor does a merge recorded late, after a newer merge of its deployment
(status ``superseded`` or ``rolled_back``, or marked ``late`` when the MR merged next was of
the same version: audited only). A merge of promoter's MR
whose head someone else pushed (``mr.merge_foreign``) leaves the model's version unknown from
then on (``Live.version`` None, ``foreign_head`` the merged commit): promoter did not check
what reached the branch, so it names no version until its next verified merge. An entry
without a usable time (``entry_time`` None: missing, not a number, NaN, infinite; a legacy or
edited entry) is left out of every replay: it cannot be placed in the history, and must never
start or lengthen a soak clock. The answer is only as complete as the trail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from promoter.core.results import DeploymentStatus

MERGED = "mr.merge"
FOREIGN_MERGED = "mr.merge_foreign"
DECOMMISSIONED = "decommissioned"
# The status of a merge recorded only after a newer merge of its deployment had been (its
# outcome was lost, then found by the MR sweep): replaced before it was known, never live since.
REPLACED = frozenset({DeploymentStatus.SUPERSEDED, DeploymentStatus.ROLLED_BACK})
# The moments an entry's time can be: years 1 to 9999 UTC (what `audit show` prints and
# `audit live --at` accepts). promoter's clock never wrote another.
EARLIEST, LATEST = -62135596800.0, 253402300799.0


def entry_time(entry: Mapping[str, Any]) -> float | None:
    """When ``entry`` was recorded, in seconds since the epoch, or None when its ``time`` is
    none promoter wrote: missing, not a number (a bool, a string), NaN, infinite, or outside
    years 1 to 9999. Compared as it is, NaN makes every comparison false (a merge counted at
    any moment asked about) and -inf a soak that began before time."""
    when = entry.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float):
        return None
    try:
        seconds = float(when)
    except OverflowError:  # an integer beyond any float
        return None
    return seconds if math.isfinite(seconds) and EARLIEST <= seconds <= LATEST else None


def _replaced(entry: Mapping[str, Any]) -> bool:
    """A merge found late that made nothing live: superseded or rolled back, or marked
    ``late`` (service.outcomes: the MR merged next was of the same version, or of one promoter
    cannot tell, so it is audited only, with no status). Read as a fresh merge, such an entry
    made an old version live again after the newer one that runs, and rollback went "back"
    to what runs."""
    return entry.get("status") in REPLACED or entry.get("late") is True


@dataclass(frozen=True)
class Live:
    model: str
    version: str | None   # None: unknown, since a merge of a head promoter did not push
    since: float          # when the merge that made it live (after something else) was recorded
    mr_url: str | None = None
    foreign_head: str | None = None      # that merge's head (someone else's commit)
    proposed_version: str | None = None  # the version promoter's MR had proposed there
    # The merge that made ``version`` live: its MR and the head promoter pushed for it (so a
    # cluster's revision can be checked for it, as `promoter status` does).
    merged_iid: int | None = None
    merged_head: str | None = None


def live_at(entries: Iterable[Mapping[str, Any]], env: str, at: float,
            model: str | None = None) -> dict[str, Live]:
    """{model: what was live} in ``env`` at time ``at`` (seconds since the epoch)."""
    live: dict[str, Live] = {}
    for entry, name, when in _merges(entries, env, model):
        if when > at:
            continue
        after = _after(live.get(name), entry, name, when)
        if after is None:
            live.pop(name, None)
        else:
            live[name] = after
    return live


def _merges(entries: Iterable[Mapping[str, Any]], env: str, model: str | None
            ) -> Iterator[tuple[Mapping[str, Any], str, float]]:
    """(entry, model, time) of the merges (promoter's and foreign) recorded in ``env``, of
    ``model`` (None: of any), in trail order; entries without a usable time left out."""
    for entry in entries:
        if entry.get("event") not in (MERGED, FOREIGN_MERGED) or entry.get("env") != env:
            continue
        name, when = entry.get("model"), entry_time(entry)
        if isinstance(name, str) and (model is None or name == model) and when is not None:
            yield entry, name, when


def _after(live: Live | None, entry: Mapping[str, Any], name: str, when: float) -> Live | None:
    """What of model ``name`` is live after merge ``entry``, recorded at ``when``, given what
    was ``live`` before it (None: nothing). The one rule of ``live_at`` and
    ``live_versions``: ``live`` itself is returned when the entry changes nothing."""
    version = entry.get("version")
    if entry.get("event") == FOREIGN_MERGED:
        head = entry.get("head_sha")
        return Live(name, None, when, entry.get("url"),
                    foreign_head=head if isinstance(head, str) else None,
                    proposed_version=version if isinstance(version, str) else None)
    if entry.get("status") == DECOMMISSIONED:
        return None if _removes(live, version) else live
    if _replaced(entry) or not isinstance(version, str):
        return live
    if live is None or live.version != version:
        iid, head = entry.get("iid"), entry.get("head_sha")
        return Live(name, version, when, entry.get("url"),
                    merged_iid=iid if isinstance(iid, int) and not isinstance(iid, bool) else None,
                    merged_head=head if isinstance(head, str) else None)
    return live


def _removes(live: Live | None, decommissioned: object) -> bool:
    """Whether a decommission of version ``decommissioned`` ends what is ``live``: when it
    names that version, or names none, or what is live is unknown (a foreign merge). A
    decommission of an older version, recorded late (a GC merge planned before the model was
    deployed again), leaves the version deployed since live."""
    return live is not None and \
        (not isinstance(decommissioned, str) or live.version in (None, decommissioned))


def first_live(entries: Iterable[Mapping[str, Any]], env: str, model: str,
               version: str) -> float | None:
    """When ``version`` of ``model`` first became live in ``env``, whether or not it still is
    (the staging-first gate's soak clock); None when it never was."""
    times = [when for entry, _, when in _merges(entries, env, model)
             if entry.get("event") == MERGED and entry.get("version") == version
             and entry.get("status") != DECOMMISSIONED and not _replaced(entry)]
    return min(times, default=None)


def live_versions(entries: Iterable[Mapping[str, Any]], env: str,
                  model: str) -> list[str | None]:
    """The versions of ``model`` live in ``env`` one after another, oldest first, since it was
    last decommissioned there (what ran before is not a rollback's to go back to); the last
    is what is live now, as ``live_at`` replays it (the same rule: a decommission naming no
    version ends what is live, a late one of an older version does not). None stands for a
    merge of someone else's head: a step of its own, whose version is unknown (promoter did
    not check what reached the branch)."""
    history: list[str | None] = []
    live: Live | None = None
    for entry, name, when in _merges(entries, env, model):
        after = _after(live, entry, name, when)
        if after is None:
            history.clear()   # what ran before a decommission is not "previous" any more
        elif after is not live and (not history or history[-1] != after.version):
            history.append(after.version)
        live = after
    return history


def previous_live(entries: Iterable[Mapping[str, Any]], env: str, model: str) -> str | None:
    """The last verified version live in ``env`` before what is live now (a rollback's
    target). A merge of someone else's head is a step of its own, whose version is unknown:
    what is live after one is not the verified version before it, and it is never a target."""
    history = live_versions(entries, env, model)
    current = history[-1] if history else None
    earlier = [version for version in history[:-1] if version is not None and version != current]
    return earlier[-1] if earlier else None
