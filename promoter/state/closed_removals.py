"""Removal MRs whose close by a reviewer was recorded, so that their reopen is one again.

A reviewer's close of a removal MR (its row ``decommissioning``) leaves the row ``closed``,
as a promotion MR's close does, and nothing else in the row says the MR removes anything. Its
reopen must put the row back to ``decommissioning``: read as a promotion's MR, its merge would
be recorded as a merge of the version it removes, making that version live again. So the
close notes the MR here (one ``state_meta`` key per MR, as state.left_mrs does) and the reopen
reads the note and removes it.

A note is keyed by project and iid, as outcome claims are: iids restart in another project
(``git.project`` changed), and a promotion MR there with a removal MR's iid must not be read
as a removal. A note is needed only while its deployment's row follows the MR (a reopen of an
MR the row left changes nothing): it goes when the reopen or a merge of the MR is recorded, and
when the row moves on to another MR (``forget_deployment``, in the ledger's transaction). No
time limit: one expiring would make a removal MR reopened after it a promotion's again.
"""

from __future__ import annotations

import json

from promoter.state.db import Connection, StateDB

PREFIX = "mr.closed_removal."


def forget_deployment(conn: Connection, name: str, env: str) -> None:
    """Within the ledger's transaction: the row of deployment (name, env) moves on to another
    MR, so no reopen of an MR it followed before undoes anything."""
    conn.execute("DELETE FROM state_meta WHERE key LIKE ? AND value = ?",
                 (f"{PREFIX}%", _deployment(name, env)))


class ClosedRemovals:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def closed(self, project: int, iid: int, name: str, env: str) -> None:
        """Removal MR ``iid`` of ``project`` (deployment name, env): its close is being
        recorded."""
        self.db.write(lambda conn: conn.execute(
            "INSERT INTO state_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value", (_key(project, iid), _deployment(name, env))))

    def is_removal(self, project: int, iid: int) -> bool:
        """Whether MR ``iid`` of ``project`` was a removal MR when its close was recorded."""
        return self.db.read(lambda conn: conn.execute(
            "SELECT 1 FROM state_meta WHERE key = ?", (_key(project, iid),)).fetchone()) \
            is not None

    def forget(self, project: int, iid: int) -> None:
        """MR ``iid`` of ``project`` is reopened (its row waits on it again) or merged."""
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM state_meta WHERE key = ?", (_key(project, iid),)))


def _key(project: int, iid: int) -> str:
    return f"{PREFIX}{project}.{iid}"


def _deployment(name: str, env: str) -> str:
    return json.dumps([name, env])
