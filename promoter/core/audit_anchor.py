"""The audit chain head, anchored in the GitOps repository. Pure.

Every promotion commit carries ``.promoter/audit-heads/<name>/<env>.json``: the local trail's
head when the commit was made (entry count ``seq`` and that entry's ``hash``). One file per
deployment branch, so merge requests of different deployments never touch the same file (one
shared file would make every second open MR conflict). Name and environment are separate path
segments: both may hold "-", so ``<name>-<env>.json`` (the layout before) was one file for
(fraud-eu, prod) and (fraud, eu-prod). Anchors in that layout stay in older trees and are read
as any other (every file under ``ANCHOR_DIR``): each still names an entry of the trail.

Git history is reviewed, merged and replicated; the local trail is a file on one machine. A
trail rewritten and re-sealed consistently passes ``promoter audit verify``, but its entry at an
anchored ``seq`` no longer has the anchored hash (every hash after an edit changes), and a trail
cut shorter than an anchor lacks the entry. Any anchor at or after the first rewritten entry
finds the rewrite, so the anchors on one branch (the newest per deployment) are enough.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from promoter.core.audit_chain import Head

ANCHOR_DIR = ".promoter/audit-heads"
_HEX = frozenset("0123456789abcdef")


def anchor_path(name: str, env: str) -> str:
    """``name`` is a validated DNS label; ``env`` a configured environment name (a DNS label
    too, core.naming): neither holds "/", so no two deployments share a path."""
    return f"{ANCHOR_DIR}/{name}/{env}.json"


def anchor_text(head: Head, *, model: str, env: str, version: str,
                time: float | None = None) -> str:
    body: dict[str, object] = {"seq": head.seq, "hash": head.hash, "model": model, "env": env,
                               "version": version}
    if time is not None:
        body["time"] = round(time, 3)
    return json.dumps(body, sort_keys=True, indent=2) + "\n"


def parse_anchor(text: str) -> Head | None:
    """The head an anchor file names, or None when it is not one."""
    try:
        data = json.loads(text)
        seq, digest = data["seq"], data["hash"]
    except (ValueError, KeyError, TypeError):
        return None
    if (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(digest, str)
            or len(digest) != 64 or not set(digest) <= _HEX):
        return None
    return Head(seq, digest)


@dataclass(frozen=True)
class AnchorFinding:
    path: str            # the anchor file in the GitOps repository
    anchored: Head | None
    problem: str


def check(lines: Iterable[str], anchors: Mapping[str, str]) -> list[AnchorFinding]:
    """Every anchor (path -> file text) that the local trail's ``lines`` contradict: an entry
    at the anchored ``seq`` with another hash (rewritten), or no such entry (cut short)."""
    hashes: dict[int, str] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to read
            continue  # `audit verify` names the line; here only chained entries count
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and "hash" in entry:
            hashes.setdefault(entry["seq"], str(entry["hash"]))
    findings = []
    for path, text in sorted(anchors.items()):
        head = parse_anchor(text)
        if head is None:
            findings.append(AnchorFinding(path, None, "not an audit anchor (seq, hash)"))
        elif head.seq == 0:
            continue  # anchored before the first entry: nothing to compare
        elif head.seq not in hashes:
            findings.append(AnchorFinding(
                path, head, f"the anchored head is entry {head.seq}, but the local trail has "
                f"{max(hashes, default=0)} entries (cut short or replaced)"))
        elif hashes[head.seq] != head.hash:
            findings.append(AnchorFinding(
                path, head, f"entry {head.seq} has hash {hashes[head.seq][:12]}… locally but "
                f"{head.hash[:12]}… was anchored in git: the local trail was rewritten"))
    return findings
