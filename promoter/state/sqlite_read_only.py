"""Reading ``state.db`` without writing anything beside it (`policy check`), whether or not
`promoter serve` has it open.

What SQLite does, which this relies on (sqlite.org; checked with SQLite 3.40):

- wal.html, "Read-Only Databases": since 3.22.0 a read-only WAL-mode database can be opened
  if its -shm and -wal files already exist, or those files can be created, or the database is
  immutable. So a ``mode=ro`` connection to a WAL database that nobody has open *creates*
  ``state.db-wal`` and ``state.db-shm`` in a writable state directory, and leaves both behind
  when it closes (a read-only connection does not run the closing checkpoint that deletes
  them).
- walformat.html: the last connection to close a WAL database checkpoints it and deletes the
  -wal and -shm files (unless SQLITE_FCNTL_PERSIST_WAL, which promoter never sets). In WAL
  mode a commit appends to the -wal; only a checkpoint writes the database file itself.
  So no -wal beside state.db means no connection has it open, and state.db alone holds
  every commit.
- uri.html, ``immutable=1``: the file is taken to be on read-only media. SQLite opens it
  read-only, takes no locks, creates no -wal/-shm and detects no change; if the file changes
  anyway, a query may return wrong results or SQLITE_CORRUPT.

Hence: with a -wal present (a writer has the database open, or one crashed), ``mode=ro``,
which reads through the files that exist and sees what the WAL holds. Without one,
``immutable=1``, which creates nothing. A writer may open the database during that read, so
the read counts only if afterwards there is still no -wal and state.db is the same file, of
the same size and modification time (a writer's first commit creates the -wal; only its
checkpoints change state.db); otherwise, or if SQLite reports the file corrupt, the read is
done again through ``mode=ro``. Left open: a writer that closes the database between the look
for its -wal and our ``mode=ro`` open; then SQLite recreates the two files it just removed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
C = TypeVar("C", bound=sqlite3.Connection)
BUSY_TIMEOUT_SECONDS = 30.0
CHANGED_UNDER_US = (11, 26)   # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


def read(path: Path, body: Callable[[C], T], factory: type[C]) -> T:
    """``body`` run on a connection that reads ``path`` as it is and writes nothing."""
    wal = path.with_name(path.name + "-wal")
    if not wal.exists():
        before = _identity(path)
        try:
            value = _run(path, "immutable=1", body, factory)
        except sqlite3.DatabaseError as exc:
            # Corrupt to SQLite: read while a checkpoint rewrote the file; read again below.
            # Any other error (a missing table) is the same through mode=ro: raised.
            if exc.sqlite_errorcode & 0xFF not in CHANGED_UNDER_US:
                raise
        else:
            if not wal.exists() and _identity(path) == before:
                return value
    return _run(path, "mode=ro", body, factory)


def _identity(path: Path) -> tuple[int, int, int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _run(path: Path, query: str, body: Callable[[C], T], factory: type[C]) -> T:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True,
                           timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                           check_same_thread=False, factory=factory)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        conn.row_factory = sqlite3.Row
        return body(conn)
    finally:
        conn.close()
