"""Deployment MRs the ledger stopped following before their outcome was recorded.

The ledger row of a (model, env) follows one MR, and the MR sweep follows the rows still
waiting on theirs. A row moves on to a newer MR only once the branch has no open MR, so the
one it leaves was merged or closed; if that outcome's hook was lost (GitLab disables a
failing hook; promoter was down) and the next version's MR opened before the sweep looked,
the older merge would never be audited nor written back. So the ledger notes here, in the
transaction that moves the row (one ``state_meta`` key per MR), each waiting MR it leaves; the
sweep follows the noted MRs, and the outcome's recording (or finding nothing to record) removes
the note. A removal MR (decommissioning) is noted as one: nothing in its merge event says it
removes, and recorded as a promotion's merge it would make its version live again.

A note is keyed by project and iid (``mr.left.<project>.<iid>``), as outcome claims and
state.closed_removals are: iids restart per project, so after ``git.project`` changes the new
project's MR with a noted iid is another MR, and must be neither read for the noted deployment
nor settle its note. Notes written before projects were recorded (``mr.left.<iid>``), and
notes of rows whose MR's project is not known, carry no project: they are read as the
configured project's, as they always were, and any project's outcome of that iid settles them.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from promoter.state.db import Connection, StateDB

PREFIX = "mr.left."
REMOVAL = "removal"


class LeftMr(NamedTuple):
    project: int | None   # None: noted without one (read as the configured project's)
    iid: int
    name: str
    env: str


def note(conn: Connection, project: int | None, iid: int, name: str, env: str, *,
         removal: bool = False) -> None:
    """Within the ledger's transaction: MR ``iid`` of ``project`` (None: not known) of
    deployment (name, env) was left waiting (``removal``: an MR that decommissions the
    environment)."""
    noted = [name, env, REMOVAL] if removal else [name, env]
    conn.execute("INSERT INTO state_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO "
                 "UPDATE SET value = excluded.value", (_key(project, iid), json.dumps(noted)))


class LeftMrs:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def unrecorded(self) -> list[LeftMr]:
        """Every MR left before its outcome was recorded, by project (those without one
        first), oldest first."""
        rows = self.db.read(lambda conn: conn.execute(
            "SELECT key, value FROM state_meta WHERE key LIKE ?", (f"{PREFIX}%",)).fetchall())
        left = []
        for key, value in rows:
            parsed, deployment = _parse(str(key)), json.loads(value)
            if parsed is not None and isinstance(deployment, list) and \
                    len(deployment) in (2, 3):
                left.append(LeftMr(*parsed, str(deployment[0]), str(deployment[1])))
        return sorted(left, key=lambda mr: (-1 if mr.project is None else mr.project, mr.iid))

    def is_removal(self, project: int, iid: int) -> bool:
        """Whether MR ``iid`` of ``project`` was left as a removal MR (and is still followed);
        a note without a project counts for it."""
        rows = self.db.read(lambda conn: conn.execute(
            "SELECT value FROM state_meta WHERE key IN (?, ?)",
            (_key(project, iid), _key(None, iid))).fetchall())
        return any(json.loads(value)[2:] == [REMOVAL] for (value,) in rows)

    def settled(self, project: int, iid: int) -> None:
        """MR ``iid`` of ``project``'s outcome is recorded, or there is none to record: no
        longer followed (nor a note of that iid without a project)."""
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM state_meta WHERE key IN (?, ?)", (_key(project, iid), _key(None, iid))))


def _key(project: int | None, iid: int) -> str:
    return f"{PREFIX}{iid}" if project is None else f"{PREFIX}{project}.{iid}"


def _parse(key: str) -> tuple[int | None, int] | None:
    """(project, iid) of a note's key; None for a key that is not a note's."""
    parts = key[len(PREFIX):].split(".")
    if not all(part.isdigit() for part in parts):
        return None
    if len(parts) == 1:
        return None, int(parts[0])
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else None
