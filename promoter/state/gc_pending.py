"""Garbage collection's merge requests whose merge or close promoter has not recorded yet.

GC's MR has no ledger row waiting on it, and GitLab does not re-send a hook answered 503 (a
live_version another merge held, MLflow down), nor one sent while promoter was down. So
``promoter gc`` notes each MR it proposes here (one ``state_meta`` key per MR), the outcome's
recording removes the key as its last step, and the MR sweep follows the MRs still noted:
an older GC MR merged unseen is not forgotten when a newer one is proposed, and a recording
cut short part-way is done again (possibly twice, never zero times).
"""

from __future__ import annotations

import time
from pathlib import Path

from promoter.state.db import StateDB, state_db

PREFIX = "gc.unrecorded."


class GcPending:
    def __init__(self, state: Path | StateDB) -> None:
        self.db = state_db(state)

    def proposed(self, iid: int) -> None:
        """GC proposed (or re-proposed) MR ``iid``: its outcome is to be recorded."""
        self.db.write(lambda conn: conn.execute(
            "INSERT INTO state_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value", (f"{PREFIX}{iid}", str(time.time()))))

    def unrecorded(self) -> list[int]:
        """The GC MRs whose outcome is not recorded yet, oldest (lowest iid) first."""
        keys = self.db.read(lambda conn: conn.execute(
            "SELECT key FROM state_meta WHERE key LIKE ?", (f"{PREFIX}%",)).fetchall())
        suffixes = (str(key)[len(PREFIX):] for (key,) in keys)
        return sorted(int(suffix) for suffix in suffixes if suffix.isdigit())

    def recorded(self, iid: int) -> None:
        """MR ``iid``'s outcome is recorded in full: nothing to follow any more."""
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM state_meta WHERE key = ?", (f"{PREFIX}{iid}",)))
