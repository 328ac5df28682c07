"""The audit chain as rows of the state database (PostgreSQL setups, shared by replicas).

``audit_entries`` holds each line exactly as it was sealed (position, line), ``audit_head``
the chain head; an append reads the tail, inserts the next line and moves the head in one
transaction under the ``audit`` lock, so appends from every replica form one chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from promoter.core.audit_chain import EMPTY, Head, head_of, legacy_head, seal
from promoter.service.audit_file import append_point
from promoter.state.db import Connection, StateDB

PAGE = 1000
TABLES = ("audit_entries", "audit_head")


class TableChain:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def location(self) -> str:
        return f"{self.db.describe()} (audit_entries)"

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        def append(conn: Connection) -> dict[str, Any]:
            conn.lock("audit")
            last = conn.execute("SELECT position, line FROM audit_entries "
                                "ORDER BY position DESC LIMIT 1").fetchone()
            row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            recorded = Head(int(row[0]), str(row[1])) if row else None
            tail, tail_entry = _head_after(conn, last)
            sealed = seal(entry, append_point(tail, tail_entry, recorded, self.location()))
            line = json.dumps(sealed, sort_keys=True, default=str)
            conn.execute("INSERT INTO audit_entries (position, line) VALUES (?, ?)",
                         ((int(last[0]) if last else 0) + 1, line))
            new_head = head_of(sealed)
            conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
                         "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, "
                         "hash = excluded.hash", (new_head.seq, new_head.hash))
            return sealed

        return self.db.write(append)

    def lines(self) -> Iterator[str]:
        after = 0
        while True:  # in pages, so a long trail is never held in memory at once
            rows = self._page(after)
            for position, line in rows:
                after = int(position)
                if line.strip():
                    yield str(line)
            if len(rows) < PAGE:
                return

    def _page(self, after: int) -> list[Any]:
        return self.db.read(lambda conn: conn.execute(
            "SELECT position, line FROM audit_entries WHERE position > ? "
            "ORDER BY position LIMIT ?", (after, PAGE)).fetchall())

    @staticmethod
    def import_lines(conn: Connection, lines: Iterable[str], head: Head | None) -> int:
        """Insert another trail's lines verbatim, in order, and its head (``state migrate``):
        the hashes are of the lines as written, so the chain verifies as it did."""
        rows = [(position, line) for position, line in enumerate(lines, 1)]
        if rows:
            conn.executemany("INSERT INTO audit_entries (position, line) VALUES (?, ?)", rows)
        if head is not None:
            conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)",
                         (head.seq, head.hash))
        return len(rows)

    def recorded_head(self) -> Head | None:
        row = self.db.read(lambda conn: conn.execute(
            "SELECT seq, hash FROM audit_head WHERE id = 1").fetchone())
        return Head(int(row[0]), str(row[1])) if row else None


def _head_after(conn: Connection, last: Any) -> tuple[Head, dict[str, Any] | None]:
    """The chain's head after row ``last`` and its entry (None when it is not chained)."""
    if last is None:
        return EMPTY, None
    try:
        entry = json.loads(last[1])
        return head_of(entry), entry
    except (ValueError, KeyError, TypeError):
        # Lines copied from a trail written before entries were chained.
        rows = conn.execute("SELECT line FROM audit_entries ORDER BY position").fetchall()
        return legacy_head(str(row[0]) for row in rows if str(row[0]).strip()), None
