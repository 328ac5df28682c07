"""Copy every row of one state database into another, ids and all (``promoter state migrate``).

The copy is row for row: jobs keep their ids (deliveries and steps point at them), local MRs
their iids. It runs as one transaction on the target, so a failure leaves it as it was. The
source is read inside one write transaction of its own, so nothing changes under the copy
(a serving promoter waits; stop it first anyway, or its later writes stay behind).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from promoter.errors import UserError
from promoter.state.db import Connection, StateDB
from promoter.state.storable import storable

# In foreign-key order: a row is copied after the rows it points at.
TABLES = ("jobs", "job_steps", "deliveries", "deployments", "deployment_names", "pushed_heads",
          "reconcile_observed", "reconcile_cursor", "reconcile_retry", "local_mrs",
          "local_mr_notes", "state_meta", "cluster_status", "cluster_summaries")
# Columns that number new rows: the target's counter must continue past the copied ids.
_NUMBERED = {"jobs": "id", "local_mrs": "iid", "local_mr_notes": "id"}
Rows = dict[str, tuple[list[str], list[tuple[Any, ...]]]]
_log = logging.getLogger("promoter.state")


def read_all(source: StateDB) -> Rows:
    def read(conn: Connection) -> Rows:
        tables: Rows = {}
        for table in TABLES:
            cursor = conn.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed names
            rows = cursor.fetchall()
            columns = [column[0] for column in cursor.description]
            tables[table] = (columns, [tuple(row) for row in rows])
        return tables

    return source.write(read)  # a write lock: one consistent snapshot, nobody writes meanwhile


def storable_rows(tables: Rows) -> Rows:
    """``tables`` with every text value ``storable``, as the writers make it today: promoter
    before 1156b4e wrote job reasons as they came (a NUL from an error body), which SQLite
    keeps and PostgreSQL refuses. No state column is hashed (the audit chain is apart), so
    the escape changes nothing but those characters; each value changed is logged."""
    copied: Rows = {}
    for table, (columns, rows) in tables.items():
        copied[table] = (columns, [_storable_row(table, columns, row) for row in rows])
    return copied


def _storable_row(table: str, columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    escaped = tuple(storable(value) if isinstance(value, str) else value for value in row)
    for column, before, after in zip(columns, row, escaped, strict=True):
        if before != after:
            _log.warning("%s row %s=%s: %s holds what PostgreSQL cannot store (a NUL or a lone "
                         "surrogate); copied with it escaped (\\x00, \\udXXX)", table,
                         columns[0], escaped[0], column)
    return escaped


def non_empty(conn: Connection, extra_tables: tuple[str, ...] = ()) -> list[str]:
    return [table for table in (*TABLES, *extra_tables)
            if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()]  # noqa: S608


def write_all(target: StateDB, tables: Rows, *, replace: bool,
              also: Callable[[Connection], dict[str, int]] | None = None,
              extra_tables: tuple[str, ...] = ()) -> dict[str, int]:
    """Insert ``tables`` into ``target`` (refusing one that holds rows unless ``replace``);
    ``also`` adds more rows in the same transaction (the audit chain). Returns counts."""

    def write(conn: Connection) -> dict[str, int]:
        conn.lock("state-copy")
        filled = non_empty(conn, extra_tables)
        if filled and not replace:
            raise UserError(f"the target already holds state ({', '.join(filled)})",
                            hint="point --to at an empty database, or pass --replace to "
                                 "delete what it holds first")
        for table in reversed((*TABLES, *extra_tables)):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
        counts: dict[str, int] = {}
        for table in TABLES:
            columns, rows = tables[table]
            if rows:
                marks = ", ".join("?" * len(columns))
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
                                 f"VALUES ({marks})", rows)
            counts[table] = len(rows)
        if conn.dialect == "postgresql":
            for table, column in _NUMBERED.items():
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "  # noqa: S608
                             f"COALESCE(MAX({column}), 0) + 1, false) FROM {table}")
        if also is not None:
            counts.update(also(conn))
        return counts

    return target.write(write)
