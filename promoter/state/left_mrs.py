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
"""

from __future__ import annotations

import json

from promoter.state.db import Connection, StateDB

PREFIX = "mr.left."
REMOVAL = "removal"


def note(conn: Connection, iid: int, name: str, env: str, *, removal: bool = False) -> None:
    """Within the ledger's transaction: MR ``iid`` of deployment (name, env) was left waiting
    (``removal``: an MR that decommissions the environment)."""
    noted = [name, env, REMOVAL] if removal else [name, env]
    conn.execute("INSERT INTO state_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO "
                 "UPDATE SET value = excluded.value", (f"{PREFIX}{iid}", json.dumps(noted)))


class LeftMrs:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def unrecorded(self) -> list[tuple[int, str, str]]:
        """(iid, name, env) of every MR left before its outcome was recorded, oldest first."""
        rows = self.db.read(lambda conn: conn.execute(
            "SELECT key, value FROM state_meta WHERE key LIKE ?", (f"{PREFIX}%",)).fetchall())
        left = []
        for key, value in rows:
            suffix, deployment = str(key)[len(PREFIX):], json.loads(value)
            if suffix.isdigit() and isinstance(deployment, list) and len(deployment) in (2, 3):
                left.append((int(suffix), str(deployment[0]), str(deployment[1])))
        return sorted(left)

    def is_removal(self, iid: int) -> bool:
        """Whether MR ``iid`` was left as a removal MR (and is still followed)."""
        row = self.db.read(lambda conn: conn.execute(
            "SELECT value FROM state_meta WHERE key = ?", (f"{PREFIX}{iid}",)).fetchone())
        noted = json.loads(row[0]) if row else None
        return isinstance(noted, list) and noted[2:] == [REMOVAL]

    def settled(self, iid: int) -> None:
        """MR ``iid``'s outcome is recorded, or there is none to record: no longer followed."""
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM state_meta WHERE key = ?", (f"{PREFIX}{iid}",)))
