"""The audit chain as rows of the state database (PostgreSQL setups, shared by replicas).

``audit_entries`` holds each line exactly as it was sealed (position, line), ``audit_head``
the chain head; an append reads the tail, inserts the next line and moves the head in one
transaction under the ``audit`` lock, so appends from every replica form one chain. No crash
can leave an entry without its head here, so an entry past the recorded head is never adopted
(someone inserted it): the next append chains onto the recorded head. A snapshot
(what `audit verify` reads) reads the head and every line in one REPEATABLE READ transaction,
so entries other replicas append meanwhile are neither in it nor in its head.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from promoter.core.audit_chain import EMPTY, Head, half_written, head_of, legacy_head, seal
from promoter.service.audit_file import UNREADABLE, ChainSnapshot, append_point
from promoter.state.db import Connection, StateDB

PAGE = 1000
TABLES = ("audit_entries", "audit_head")
T = TypeVar("T")
_log = logging.getLogger("promoter.audit")


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
            recorded = _recorded_head(conn)
            tail, tail_entry = _head_after(conn, last, self.location())
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
        """Each page in a transaction of its own: fine for readers of entries alone (rows are
        only ever added after the last), not for a check against the head (``snapshot``)."""
        return _paged_lines(lambda after: self.db.read(lambda conn: _page(conn, after)))

    def snapshot(self, reader: Callable[[ChainSnapshot], T]) -> T:
        """``reader`` run on the head and the lines as of one moment: one REPEATABLE READ
        transaction reads both (still in pages, so a long trail is never held at once)."""
        def read(conn: Connection) -> T:
            # The first statement of the transaction; its snapshot is taken by the next one.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            head = _recorded_head(conn)
            return reader(ChainSnapshot(head, lambda: _paged_lines(
                lambda after: _page(conn, after))))

        return self.db.read(read)

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
        return self.db.read(_recorded_head)


def _recorded_head(conn: Connection) -> Head | None:
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    return Head(int(row[0]), str(row[1])) if row else None


def _paged_lines(page: Callable[[int], list[Any]]) -> Iterator[str]:
    """The lines, read ``PAGE`` rows at a time by ``page(after position)``, so a long trail is
    never held in memory at once."""
    after = 0
    while True:
        rows = page(after)
        for position, line in rows:
            after = int(position)
            if line.strip():
                yield str(line)
        if len(rows) < PAGE:
            return


def _page(conn: Connection, after: int) -> list[Any]:
    return conn.execute("SELECT position, line FROM audit_entries WHERE position > ? "
                        "ORDER BY position LIMIT ?", (after, PAGE)).fetchall()


def _head_after(conn: Connection, last: Any,
                where: str) -> tuple[Head, dict[str, Any] | None]:
    """The chain's head after row ``last`` and its entry (None when it is not chained). A
    half-written last row (copied by `state migrate` from a trail whose last append was cut
    short) is passed over as the file chain passes over its torn line: the chain ends at the
    row before it, and the row stays for `audit verify` to name."""
    if last is not None and half_written(str(last[1])):
        _log.error("the audit trail %s ends in a half-written line (an interrupted append); "
                   "the next entry follows the entry before it", where)
        last = conn.execute("SELECT position, line FROM audit_entries WHERE position < ? "
                            "ORDER BY position DESC LIMIT 1", (int(last[0]),)).fetchone()
    if last is None:
        return EMPTY, None
    try:
        entry = json.loads(last[1])
        return head_of(entry), entry
    except UNREADABLE:
        # Lines copied from a trail written before entries were chained. (Or the last row was
        # edited past reading: append_point then chains onto the recorded head and logs it.)
        rows = conn.execute("SELECT line FROM audit_entries ORDER BY position").fetchall()
        return legacy_head(str(row[0]) for row in rows if str(row[0]).strip()), None
