"""Which commit promoter pushed for each GitLab MR, so webhooks act only on promoter's own head.

A small SQLite table under the state directory, shared by the worker (which writes after each
proposal) and the webhook handler (which reads). ``(project, iid)`` is the key; ``project`` is
GitLab's numeric project id, which webhooks carry and renames do not change.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushes (
  project INTEGER NOT NULL, iid INTEGER NOT NULL, branch TEXT NOT NULL, sha TEXT NOT NULL,
  version TEXT NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (project, iid))
"""


class PushLedger:
    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> PushLedger:
        return cls(state_dir / "gitlab-pushes.db")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def record(self, project: int, iid: int, branch: str, sha: str, version: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO pushes VALUES (?, ?, ?, ?, ?, ?)",
                       (project, iid, branch, sha, version, time.time()))

    def pushed_sha(self, project: int, iid: int) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT sha FROM pushes WHERE project = ? AND iid = ?",
                             (project, iid)).fetchone()
        return str(row[0]) if row else None
