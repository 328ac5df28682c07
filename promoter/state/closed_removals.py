"""Removal MRs whose close by a reviewer was recorded, so that their reopen is one again.

A reviewer's close of a removal MR (its row ``decommissioning``) leaves the row ``closed``,
as a promotion MR's close does, and nothing else in the row says the MR removes anything. Its
reopen must put the row back to ``decommissioning``: read as a promotion's MR, its merge would
be recorded as a merge of the version it removes, making that version live again. So the
close notes the MR here (one ``state_meta`` key per MR, as state.left_mrs does) and the reopen
reads the note and removes it.
"""

from __future__ import annotations

from promoter.state.db import StateDB

PREFIX = "mr.closed_removal."


class ClosedRemovals:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def closed(self, iid: int) -> None:
        """Removal MR ``iid``'s close is being recorded."""
        self.db.write(lambda conn: conn.execute(
            "INSERT INTO state_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (f"{PREFIX}{iid}", "closed")))

    def is_removal(self, iid: int) -> bool:
        """Whether MR ``iid`` was a removal MR when its close was recorded."""
        return self.db.read(lambda conn: conn.execute(
            "SELECT 1 FROM state_meta WHERE key = ?", (f"{PREFIX}{iid}",)).fetchone()) \
            is not None

    def reopened(self, iid: int) -> None:
        """MR ``iid``'s reopen is recorded: its row waits on it again."""
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM state_meta WHERE key = ?", (f"{PREFIX}{iid}",)))
