"""The dialect shim: stores write SQLite-style SQL, PostgreSQL runs it.

Only what the stores use is translated: ``?`` placeholders become ``%s`` (a literal ``%``
is escaped first), rows read by column name or by position like ``sqlite3.Row``, and the two
PostgreSQL-only calls of promoter.state.db.Connection — ``lock`` and ``notify`` — become an
advisory transaction lock and ``pg_notify``. And ``takes_writes``: whether a session's server
still takes writes (the leadership and LISTEN sessions ask it, see there).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import RowMaker


class Row(tuple[Any, ...]):
    """A row readable as ``row[0]`` or ``row["column"]`` (what sqlite3.Row offers)."""

    names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row.names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    names = {column.name: index for index, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


# A standby (in recovery), or a primary demoted under its open sessions: a failover tool sets
# default_transaction_read_only and reloads, and every session applies it before its next
# statement, so a statement of its own transaction (autocommit) reads it here.
_TAKES_WRITES_SQL = ("SELECT NOT pg_is_in_recovery() "
                     "AND current_setting('transaction_read_only') = 'off'")


def takes_writes(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server of ``conn`` (autocommit) takes writes now. A session opened before
    a failover stays on the old server, where SELECT 1, LISTEN and advisory locks all keep
    working read-only, while every new session (target_session_attrs=read-write) lands on
    the new primary: such a session must be dropped, not trusted for being alive."""
    row = conn.execute(_TAKES_WRITES_SQL).fetchone()
    return row is not None and bool(row[0])


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite placeholders to psycopg's (no statement of ours has '?' in a literal)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """One pooled connection inside a StateDB ``read``/``write``."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn
        self._channels: set[str] = set()
        # Taken by lock_all, outside any savepoint: a ROLLBACK TO cannot have released them.
        self._held: set[str] = set()

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Row]:
        # Without parameters psycopg sends the text as it is: translate's doubled "%" (for
        # its formatting to undo) would reach PostgreSQL, so "7 % 4" or a LIKE 'x%' literal
        # failed or read differently than on SQLite. Such a statement has no "?" either.
        if not parameters:
            return self._conn.execute(sql)
        return self._conn.execute(translate(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Row]:
        cursor = self._conn.cursor()
        cursor.executemany(translate(sql), list(parameters))
        return cursor

    def lock(self, name: str) -> None:
        # Held until the transaction ends; a hash collision only serialises two names more.
        if name not in self._held:
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                               (name,))

    def try_lock(self, name: str) -> bool:
        if name in self._held:
            return True
        row = self._conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
                                 (name,)).fetchone()
        return row is not None and bool(row[0])

    def lock_all(self, names: Sequence[str]) -> None:
        # One round trip for a whole group-committed batch; unnest keeps the array's order.
        self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(name, 0)) "
                           "FROM unnest(%s::text[]) AS name", (list(names),))
        self._held.update(names)

    def notify(self, channel: str) -> None:
        # Sent once, just before commit (flush_notifications): a group-committed batch of
        # many new jobs costs one round trip, not one per job. Listeners get it at commit.
        self._channels.add(channel)

    def flush_notifications(self) -> None:
        for channel in sorted(self._channels):
            self._conn.execute("SELECT pg_notify(%s, '')", (channel,))
        self._channels.clear()
