"""The SQLite backend of the state database: ``<state_dir>/state.db`` (the default).

Threads: one connection per thread. A sqlite3 connection must not be used by two threads at
once, and per-thread connections let ``serve --workers 4`` read in parallel under WAL while
SQLite's own write lock serialises writers. Processes: every read-modify-write runs in
``write()``, one ``BEGIN IMMEDIATE`` transaction taken up front, so two processes never
interleave a read and a write of the same rows.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from promoter.errors import TransientError
from promoter.state import sqlite_read_only
from promoter.state.db import (
    DB_FILENAME,
    FILE_MODE,
    Connection,
    StateConflict,
    StateDB,
    ensure_state_dir,
)

T = TypeVar("T")
C = TypeVar("C", bound=sqlite3.Connection)
BUSY_TIMEOUT_SECONDS = 30.0


class SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection that also answers the two calls PostgreSQL needs (no-ops here)."""

    dialect = "sqlite"

    def lock(self, name: str) -> None:
        """Nothing to take: a BEGIN IMMEDIATE transaction already excludes every writer."""

    def try_lock(self, name: str) -> bool:
        """Nothing to take (see lock): this transaction already excludes every writer."""
        return True

    def lock_all(self, names: Sequence[str]) -> None:
        """Nothing to take (see lock)."""

    def notify(self, channel: str) -> None:
        """Nothing to send: processes sharing a SQLite file find new work by polling."""


def make_private(path: Path) -> None:
    """chmod ``path`` and its -wal/-shm to 0600 where looser. Only chmod, never open(): closing
    any descriptor of the database file would drop every POSIX lock this process holds on it,
    and another process could then checkpoint the WAL away under our live connections."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(FILE_MODE)
        except FileNotFoundError:
            pass


def connect(path: Path) -> SqliteConnection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on commit."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                           check_same_thread=False, factory=SqliteConnection)
    # The file exists now; SQLite creates the -wal and -shm with its mode, so tighten it first
    # (the 0700 directory already keeps others out in between).
    make_private(path)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    switch_to_wal(conn, path)
    # FULL: the WAL is fsynced at every commit, so an acknowledged delivery survives power loss.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = sqlite3.Row
    return conn


def switch_to_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Put the file in WAL mode (persistent: done once per file, a no-op afterwards).

    Leaving the rollback journal takes an exclusive lock, and SQLite answers "database is
    locked" at once, without waiting out busy_timeout, when another connection converts the same
    fresh file at the same moment. So first opens take turns on a sibling lock file: the
    conversion runs once and every other opener finds the file already in WAL."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":  # SQLite answers lowercase
        return
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # a separate file: no POSIX lock on state.db
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        os.close(descriptor)  # closing releases the flock


def in_transaction(conn: C, body: Callable[[C], T]) -> T:
    """Run ``body`` in one write transaction taken up front (BEGIN IMMEDIATE)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        value = body(conn)
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (disk full)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return value


class SqliteStateDB(StateDB):
    """Per-thread connections to one state.db; ``write``/``read`` translate SQLite errors."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self._path = Path(path)
        self._read_only = read_only
        self._local = threading.local()
        self._connections: set[sqlite3.Connection] = set()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, state_dir: Path) -> SqliteStateDB:
        """The state database of ``state_dir``: created, migrated, old layout imported."""
        from promoter.state import legacy, schema

        db = cls(ensure_state_dir(Path(state_dir)) / DB_FILENAME)
        with db.errors_translated():
            schema.migrate(db.connection(), db.path)
        legacy.import_old_layout(db)
        return db

    @classmethod
    def open_read_only(cls, state_dir: Path) -> SqliteStateDB | None:
        """The state database of ``state_dir`` as it is, for reading only (`policy check`):
        nothing created, migrated or imported, not even the -wal and -shm files SQLite reads
        a WAL database through (state.sqlite_read_only); None when there is none."""
        path = Path(state_dir).expanduser() / DB_FILENAME
        return cls(path, read_only=True) if path.is_file() else None

    @property
    def path(self) -> Path:
        return self._path

    def describe(self) -> str:
        return str(self._path)

    @property
    def fatal_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.OperationalError,)  # locked, I/O: the transaction is gone

    def connection(self) -> SqliteConnection:
        """This thread's connection (opened on first use, closed when the thread ends)."""
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            conn = connect(self._path)
            holder = _Holder(conn)
            self._local.holder = holder
            with self._lock:
                self._connections.add(conn)
            # Threads come and go (a heartbeat per job): close a connection with its thread.
            weakref.finalize(holder, _forget, conn, self._connections, self._lock)
        return holder.conn

    def write(self, body: Callable[[Connection], T]) -> T:
        if self._read_only:
            raise TypeError("a read-only state database takes no writes")
        with self.errors_translated():
            return in_transaction(self.connection(), body)

    def read(self, body: Callable[[Connection], T]) -> T:
        with self.errors_translated():
            if self._read_only:
                # A connection per read, opened as state.sqlite_read_only decides: nothing
                # created beside state.db, what a running writer committed still seen.
                return sqlite_read_only.read(self._path, body, SqliteConnection)
            return body(self.connection())

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in list(connections):  # finalizers of dying threads may remove theirs
            conn.close()
        self._local = threading.local()

    @contextmanager
    def errors_translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise StateConflict(f"the state database {self._path} refused a write: {exc}",
                                hint="another process wrote the same record; try again"
                                ) from exc
        except sqlite3.Error as exc:
            raise TransientError(f"the state database {self._path} is unusable: {exc}",
                                 hint="check the state directory's disk space and permissions; "
                                      "another process may hold a long write lock") from exc


class _Holder:
    """One thread's connection; collected (and the connection closed) when the thread ends."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: SqliteConnection) -> None:
        self.conn = conn


def _forget(conn: sqlite3.Connection, connections: set[sqlite3.Connection],
            lock: threading.Lock) -> None:
    with lock:
        connections.discard(conn)
    conn.close()
