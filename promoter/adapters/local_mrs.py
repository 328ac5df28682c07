"""The local provider's merge requests, notes and approvals: tables in the state database.

The records mirror what GitLab keeps for an MR, so the local provider can replay the same
lifecycle (one open MR per source branch, bot notes edited in place, required approvals).
``sha`` is the head the record is pinned to: of a settled (or locked) MR the head it settled
with; of an open one the head its approvals (``approved_by``) were given for, so approvals of
a head that has since moved do not count (GitLab's reset of approvals on push).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promoter.core.mr_text import marker_version
from promoter.state.db import Connection, StateConflict, StateDB, state_db

_COLUMNS = ("iid", "source_branch", "target_branch", "title", "description", "labels", "state",
            "sha", "approvals_required", "approved_by", "auto_merge_sha", "merge_commit_sha",
            "created_at", "updated_at")
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM local_mrs"  # noqa: S608 - fixed names


class OpenMergeRequestExists(Exception):
    pass


class LocalMrStore:
    def __init__(self, state: Path | StateDB) -> None:
        self.db = state_db(state)

    def find(self, *, state: str | None = None, source_branch: str | None = None
             ) -> list[dict[str, Any]]:
        query, args = _SELECT + " WHERE 1=1", list[str]()
        if state and state != "all":
            query, args = query + " AND state = ?", [*args, state]
        if source_branch:
            query, args = query + " AND source_branch = ?", [*args, source_branch]
        rows = self.db.read(lambda db: db.execute(query + " ORDER BY iid DESC", args).fetchall())
        return [_record(row) for row in rows]

    def get(self, iid: int) -> dict[str, Any] | None:
        row = self.db.read(lambda db: db.execute(_SELECT + " WHERE iid = ?", (iid,)).fetchone())
        return _record(row) if row else None

    def create(self, source: str, target: str, title: str, description: str,
               labels: Sequence[str]) -> int:
        now = time.time()

        def insert(db: Connection) -> int:
            # An MR being merged (locked) still holds its branch, as on GitLab: the merge
            # deletes the branch once it lands, so a second MR on it now would lose its head.
            if db.execute("SELECT 1 FROM local_mrs WHERE source_branch = ? AND state = 'locked'",
                          (source,)).fetchone():
                raise OpenMergeRequestExists(source)
            return int(db.execute(
                "INSERT INTO local_mrs (source_branch, target_branch, title, description, "
                "labels, state, approvals_required, approved_by, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'opened', 0, '[]', ?, ?) RETURNING iid",
                (source, target, title, description, json.dumps(list(labels)), now, now)
            ).fetchone()[0])

        try:
            return self.db.write(insert)
        except StateConflict:  # local_mrs_one_open
            raise OpenMergeRequestExists(source) from None

    def update(self, iid: int, **fields: Any) -> None:
        assignments, values = _assignments(fields)
        self.db.write(lambda db: db.execute(
            f"UPDATE local_mrs SET {assignments}, updated_at = ? WHERE iid = ?",  # noqa: S608
            (*values, time.time(), iid)))

    def transition(self, iid: int, before: str, after: str, **fields: Any) -> bool:
        """Move the MR from state ``before`` to ``after`` (setting ``fields`` too); False, and
        nothing written, when it is no longer ``before``. Merge and close both go through
        here, so of two racing ones exactly one wins and the other is told."""
        assignments, values = _assignments({**fields, "state": after})

        def move(db: Connection) -> bool:
            db.lock(f"local_mrs:{iid}")  # PostgreSQL: the same lock add_approval takes
            return db.execute(
                f"UPDATE local_mrs SET {assignments}, updated_at = ? "  # noqa: S608
                "WHERE iid = ? AND state = ?", (*values, time.time(), iid, before)
            ).rowcount == 1

        return self.db.write(move)

    def add_approval(self, iid: int, user: str, head: str) -> bool:
        """Add ``user`` to the approvers of the MR's ``head``; False if they already approved
        it. Approvals recorded for another head are dropped first (that head moved on since).
        One transaction, so two reviewers approving at once are both counted."""

        def approve(db: Connection) -> bool:
            db.lock(f"local_mrs:{iid}")  # PostgreSQL: two approvals never read the same list
            row = db.execute("SELECT approved_by, sha FROM local_mrs WHERE iid = ?",
                             (iid,)).fetchone()
            if row is None:
                return False
            approvers = json.loads(row["approved_by"]) if row["sha"] == head else []
            if user in approvers:
                return False
            db.execute("UPDATE local_mrs SET approved_by = ?, sha = ?, updated_at = ? "
                       "WHERE iid = ?", (json.dumps([*approvers, user]), head, time.time(), iid))
            return True

        return self.db.write(approve)

    def reset_approvals(self, source_branch: str) -> None:
        """New commits void earlier approvals and auto-merge (GitLab's reset on push)."""
        self.db.write(lambda db: db.execute(
            "UPDATE local_mrs SET approved_by = '[]', auto_merge_sha = NULL, sha = NULL, "
            "updated_at = ? "
            "WHERE state = 'opened' AND source_branch = ?", (time.time(), source_branch)))

    def notes(self, iid: int) -> list[tuple[int, str]]:
        rows = self.db.read(lambda db: db.execute(
            "SELECT id, body FROM local_mr_notes WHERE iid = ? ORDER BY id", (iid,)).fetchall())
        return [(int(r["id"]), str(r["body"])) for r in rows]

    def add_note(self, iid: int, body: str) -> None:
        now = time.time()
        self.db.write(lambda db: db.execute(
            "INSERT INTO local_mr_notes (iid, body, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (iid, body, now, now)))

    def edit_note(self, note_id: int, body: str) -> None:
        self.db.write(lambda db: db.execute(
            "UPDATE local_mr_notes SET body = ?, updated_at = ? WHERE id = ?",
            (body, time.time(), note_id)))


def _assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``fields`` as ``name = ?, …`` and their stored values (lists as JSON)."""
    unknown = set(fields) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown MR fields {sorted(unknown)}")
    values = [json.dumps(list(value)) if name in ("labels", "approved_by") else value
              for name, value in fields.items()]
    return ", ".join(f"{name} = ?" for name in fields), values


def _record(row: Any) -> dict[str, Any]:
    record = dict(zip(_COLUMNS, tuple(row), strict=True))
    record["labels"] = json.loads(record["labels"])
    record["approved_by"] = json.loads(record["approved_by"])
    record["version"] = marker_version(record["description"])
    return record
