"""The local provider's merge requests, notes and approvals: SQLite under the state directory.

The records mirror what GitLab keeps for an MR, so the local provider can replay the same
lifecycle (one open MR per source branch, bot notes edited in place, required approvals).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from promoter.core.mr_text import marker_version

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mrs (
  iid INTEGER PRIMARY KEY AUTOINCREMENT, source_branch TEXT NOT NULL,
  target_branch TEXT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
  labels TEXT NOT NULL, state TEXT NOT NULL, sha TEXT, approvals_required INTEGER NOT NULL,
  approved_by TEXT NOT NULL, auto_merge_sha TEXT, merge_commit_sha TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_mr ON mrs (source_branch) WHERE state = 'opened';
CREATE TABLE IF NOT EXISTS notes (
  id INTEGER PRIMARY KEY AUTOINCREMENT, iid INTEGER NOT NULL, body TEXT NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL);
"""
_COLUMNS = ("iid", "source_branch", "target_branch", "title", "description", "labels", "state",
            "sha", "approvals_required", "approved_by", "auto_merge_sha", "merge_commit_sha",
            "created_at", "updated_at")
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM mrs"  # noqa: S608 - fixed column names


class OpenMergeRequestExists(Exception):
    pass


class LocalMrStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            db.row_factory = sqlite3.Row
            yield db

    def find(self, *, state: str | None = None, source_branch: str | None = None
             ) -> list[dict[str, Any]]:
        query, args = _SELECT + " WHERE 1=1", list[str]()
        if state and state != "all":
            query, args = query + " AND state = ?", [*args, state]
        if source_branch:
            query, args = query + " AND source_branch = ?", [*args, source_branch]
        with self._db() as db:
            return [_record(row) for row in db.execute(query + " ORDER BY iid DESC", args)]

    def get(self, iid: int) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute(_SELECT + " WHERE iid = ?", (iid,)).fetchone()
        return _record(row) if row else None

    def create(self, source: str, target: str, title: str, description: str,
               labels: Sequence[str]) -> int:
        now = time.time()
        try:
            with self._db() as db:
                cursor = db.execute(
                    "INSERT INTO mrs (source_branch, target_branch, title, description, labels,"
                    " state, approvals_required, approved_by, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, 'opened', 0, '[]', ?, ?)",
                    (source, target, title, description, json.dumps(list(labels)), now, now))
                return int(cursor.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise OpenMergeRequestExists(source) from None

    def update(self, iid: int, **fields: Any) -> None:
        if "labels" in fields:
            fields["labels"] = json.dumps(list(fields["labels"]))
        if "approved_by" in fields:
            fields["approved_by"] = json.dumps(list(fields["approved_by"]))
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown MR fields {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._db() as db:
            db.execute(f"UPDATE mrs SET {assignments}, updated_at = ? WHERE iid = ?",  # noqa: S608
                       (*fields.values(), time.time(), iid))

    def notes(self, iid: int) -> list[tuple[int, str]]:
        with self._db() as db:
            return [(int(r["id"]), str(r["body"])) for r in
                    db.execute("SELECT id, body FROM notes WHERE iid = ? ORDER BY id", (iid,))]

    def add_note(self, iid: int, body: str) -> None:
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO notes (iid, body, created_at, updated_at) VALUES (?, ?, ?, ?)",
                       (iid, body, now, now))

    def edit_note(self, note_id: int, body: str) -> None:
        with self._db() as db:
            db.execute("UPDATE notes SET body = ?, updated_at = ? WHERE id = ?",
                       (body, time.time(), note_id))


def _record(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(zip(_COLUMNS, tuple(row), strict=True))
    record["labels"] = json.loads(record["labels"])
    record["approved_by"] = json.loads(record["approved_by"])
    record["version"] = marker_version(record["description"])
    return record
