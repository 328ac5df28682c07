"""The audit trail as a hash chain: each entry carries the SHA-256 of the one before it.

Pure: entries in, hashes and findings out; appending to ``audit.jsonl`` and remembering the
chain head are the service's business. An entry's hash covers its canonical JSON (sorted keys,
no whitespace) including ``seq`` and ``prev``, so editing, deleting, reordering or inserting
a line breaks the chain at that line. Cutting lines off the end leaves a consistent but
shorter chain: that is caught against the head recorded elsewhere (the state database, and
optionally a file committed to the GitOps repository with each merge request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class Head:
    """The last entry of a chain: how many entries it has and the last hash."""

    seq: int
    hash: str


EMPTY = Head(0, GENESIS)
# The ``pending`` of a head written before heads named the entry being written after them
# (an older promoter, which wrote the entry and then the head). A crash in between left the
# trail one entry past such a head with nothing naming it, and that promoter took any one
# entry chaining onto the head for it; so does ``settled`` for such a head, as it cannot tell
# a crash's entry from a forgery (nor could the old promoter). Once only: the next append
# writes a head that names its pending entry (or none), and that rule holds from then on.
UNNAMED = Head(-1, "")


def canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")


def seal(fields: Mapping[str, Any], head: Head) -> dict[str, Any]:
    """The next entry after ``head``: ``fields`` plus seq, prev and its own hash."""
    entry = {key: value for key, value in fields.items() if key not in ("seq", "prev", "hash")}
    entry.update(seq=head.seq + 1, prev=head.hash)
    entry["hash"] = hashlib.sha256(canonical(entry)).hexdigest()
    return entry


def head_of(entry: Mapping[str, Any]) -> Head:
    return Head(int(entry["seq"]), str(entry["hash"]))


def chain_onto(tail: Head, last: Mapping[str, Any] | None, recorded: Head | None,
               pending: Head | None = None) -> Head:
    """Where the next entry chains: the trail's end (``tail``, from its ``last`` entry) when it
    is the recorded head, or when it is the ``pending`` entry the head said was being written
    right after it (a crash between writing that entry and moving the head); otherwise the
    recorded head. Chaining onto the end of a trail that was cut short, or whose end was edited
    and re-hashed, or onto an entry someone appended without moving the head, would seal over
    it (the new head recorded, ``verify`` passing again); chaining onto the recorded head leaves
    the break where it is, for ``verify`` to find. An entry that merely follows the recorded
    head is not enough to be adopted: anyone can seal one, as the hash has no key."""
    if recorded is None or recorded == tail:
        return tail
    if last is not None and settled(recorded, pending, last) == tail:
        return tail
    return recorded


def settled(recorded: Head | None, pending: Head | None,
            last: Mapping[str, Any] | None) -> Head | None:
    """The head a trail ending with the entry ``last`` really has: ``pending`` when ``last``
    is that entry and follows the recorded head (a crash between writing the entry and moving
    the head leaves the trail so: the head names the entry before it was written, and its
    hash covers its ``prev``); ``recorded`` otherwise. A head written before heads named
    their pending entry (``UNNAMED``) settles on whichever entry follows it."""
    if recorded is None or pending is None or last is None or "hash" not in last:
        return recorded
    try:
        tail = head_of(last)
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: "seq": 1e999
        return recorded
    if pending == UNNAMED:
        pending = tail
    if tail == pending and pending.seq == recorded.seq + 1 and last.get("prev") == recorded.hash:
        return pending
    return recorded


def settled_head(lines: Iterable[str], recorded: Head | None,
                 pending: Head | None) -> Head | None:
    """``settled`` for a whole trail's ``lines`` (what a copy of the trail must record)."""
    last: dict[str, Any] | None = None
    for line in lines:
        entry, _ = _parse(line)
        last = entry if entry is not None and "hash" in entry else last
    return settled(recorded, pending, last)


@dataclass(frozen=True)
class Finding:
    """The first line (1-based) where the trail stops being what was written, and why."""

    line: int
    problem: str


def legacy_head(lines: Iterable[str]) -> Head:
    """Where a chain starts after entries written before the trail was chained: the first
    chained entry's ``prev`` is the SHA-256 of those lines, so they cannot change either."""
    digest = hashlib.sha256()
    count = 0
    for line in lines:
        digest.update(line.rstrip("\n").encode("utf-8") + b"\n")
        count += 1
    return Head(0, digest.hexdigest()) if count else EMPTY


def verify(lines: Iterable[str], recorded: Head | None = None,
           pending: Head | None = None, *, past_torn: bool = False) -> Finding | None:
    """None when every line chains to the one before and the end matches ``recorded`` (or is
    the ``pending`` entry right after it: see ``settled``).

    Lines before the first chained entry (a trail from before chaining) are accepted as they
    are, bound by the first chained entry's ``prev``; anywhere else a line without a hash is a
    finding, and so is a trail of such lines alone without a recorded head (unverifiable). A
    chained trail with no recorded head is a finding too: without it, entries cut off the end
    would go unnoticed.

    ``past_torn``: a half-written line (an append cut short by a crash or a full disk, which
    the next append ends and passes over) is no finding when the chain runs on unbroken
    around it, as it must: the entry after it has to follow the one before it. For decisions
    read from the trail: the line holds no entry anyone reads, and one interrupted append
    must not set aside every entry after it for good. `audit verify` still names it."""
    head, before, number = EMPTY, EMPTY, 0
    legacy: list[str] = []
    chained = False
    last: dict[str, Any] | None = None
    at_recorded = 0  # the line of the recorded head's entry, once seen
    for number, line in enumerate(lines, start=1):
        entry, problem = _parse(line)
        if entry is None:
            if past_torn and chained and problem == HALF_WRITTEN:
                continue
            return Finding(number, problem)
        if "hash" not in entry:
            if chained:
                return Finding(number, "an entry without a hash after chained entries (only "
                               "entries written before chaining, at the start, have none)")
            legacy.append(line)
            continue
        if not chained:
            chained, head = True, legacy_head(legacy)
        broken = _check(entry, head)
        if broken:
            if last is not None and not _check(entry, before):
                return Finding(number - 1, "an entry was inserted here: the entry after it "
                               "follows the one before it")
            return Finding(number, broken)
        before, head, last = head, head_of(entry), entry
        if head == recorded:
            at_recorded = number
    if not chained:
        if recorded is None or recorded == EMPTY:
            # Only entries without a hash, and no head: written before chaining, or stripped of
            # their chain (with the head file deleted), which costs an editor no hashing at
            # all. Nothing local can tell the two apart, so this is not a pass.
            return None if number == 0 else Finding(1, (
                f"none of the {number} entries is chained and no chain head is recorded: they "
                "were written before the trail was chained, or their chain was stripped, so "
                "nothing here shows they are unedited; the next entry promoter appends binds "
                "them as they are now (check them against the anchors first: --against-git)"))
        return Finding(number + 1, f"the trail has no chained entry but {recorded.seq} were "
                       "recorded (the chain was stripped or cut off)")
    if recorded is None:
        return Finding(number + 1, "no chain head is recorded, so entries cut off the end "
                       "would go unnoticed; restore the recorded head (audit.head, or the "
                       "state database's), or check the trail with --against-git")
    if settled(recorded, pending, last) != head:
        if recorded.seq > head.seq:
            return Finding(number + 1, f"the trail ends at entry {head.seq} but {recorded.seq} "
                           "were recorded (entries were cut off the end)")
        if at_recorded:
            return Finding(at_recorded + 1, f"entries after the recorded head (seq "
                           f"{recorded.seq}) were appended without moving it: promoter names "
                           "each entry in the head before writing it, so it did not write "
                           "them")
        return Finding(number, f"the last entry is not the recorded head (seq {recorded.seq}, "
                       f"hash {recorded.hash[:12]}…)")
    return None


def unchained_prefix(lines: Iterable[str]) -> int:
    """How many lines at the start of the trail were written before it was chained."""
    count = 0
    for line in lines:
        entry, _ = _parse(line)
        if entry is None or "hash" in entry:
            break
        count += 1
    return count


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for key, value in pairs:
        if key in entry:
            raise _DuplicateKey(key)
        entry[key] = value
    return entry


def _parse(line: str) -> tuple[dict[str, Any] | None, str]:
    """The entry on ``line``, or None and why not. A key written twice is refused: the hash
    covers the parsed entry, which keeps only the last of them, so a first one could be added
    unnoticed and shown by any reader that keeps the first."""
    try:
        entry = json.loads(line, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return None, f"the key {str(exc)!r} appears twice (the entry was edited)"
    except ValueError as exc:
        if line.lstrip().startswith("{") and _ends_mid_entry(exc, line):
            return None, HALF_WRITTEN
        return None, "not a JSON object (edited or cut off mid-line)"
    except RecursionError:
        # Nested deeper than the parser goes: promoter never wrote it (sealing it would have
        # failed the same way), and raising would end `audit verify` without naming the line.
        return None, ("not a JSON object promoter can read: nested too deeply (the entry was "
                      "edited)")
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    return entry, ""


def half_written(line: str) -> bool:
    """Whether ``line`` stops mid-entry, as an append interrupted by a crash leaves it."""
    return _parse(line)[1] == HALF_WRITTEN


HALF_WRITTEN = ("a half-written line: it ends mid-entry (an append interrupted by a crash or a "
                "full disk, or the line was cut); the entries after it are on lines of their own")


def _ends_mid_entry(exc: ValueError, line: str) -> bool:
    """Whether JSON's complaint is that ``line`` stops before the entry does (a string left
    open, or nothing where more was due), as a write cut short leaves it."""
    if not isinstance(exc, json.JSONDecodeError):
        return False
    return exc.msg.startswith("Unterminated string") or exc.pos >= len(line.rstrip())


def _check(entry: Mapping[str, Any], head: Head) -> str | None:
    given = entry.get("hash")
    body = {key: value for key, value in entry.items() if key != "hash"}
    try:
        actual = hashlib.sha256(canonical(body)).hexdigest()
    except (UnicodeEncodeError, RecursionError):
        # A lone surrogate (a "\ud800" escape) has no UTF-8, and a value nested too deeply
        # has no canonical form: promoter seals only what it can hash (state.storable escapes
        # surrogates first), so the line was edited after it was written.
        actual = None
    if given != actual:
        return "its hash does not match its content (the entry was edited)"
    if entry.get("prev") != head.hash:
        return "it does not follow the entry before it (an entry was deleted, inserted or moved)"
    if entry.get("seq") != head.seq + 1:
        return f"sequence number {entry.get('seq')!r} where {head.seq + 1} was due"
    return None
