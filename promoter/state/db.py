"""The one state database, ``<state_dir>/state.db``: how it is created, opened and written.

Every piece of promoter's own state (job queue, webhook dedupe, reconcile cursor, deployment
ledger, pushed MR heads, local merge requests) lives in this one SQLite file, opened only
through ``StateDB``, so there is one durability setting and one busy timeout for all of it.

Threads: one connection per thread. A sqlite3 connection must not be used by two threads at
once, and per-thread connections let ``serve --workers 4`` read in parallel under WAL while
SQLite's own write lock serialises writers. Processes: every read-modify-write runs in
``write()``, one ``BEGIN IMMEDIATE`` transaction taken up front, so two processes never
interleave a read and a write of the same rows.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from promoter.errors import TransientError, UserError

T = TypeVar("T")
DB_FILENAME = "state.db"
BUSY_TIMEOUT_SECONDS = 30.0
# Owner only: the database holds MR heads, webhook ids and job payloads from the registry.
DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state directory owner-only (0700) if it is missing. An existing one keeps
    its mode: it may be a directory the operator chose and shares on purpose."""
    state_dir = Path(state_dir).expanduser()
    try:
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        state_dir.mkdir(mode=DIR_MODE)
        state_dir.chmod(DIR_MODE)  # mkdir's mode is masked by the umask; make it exact
    except FileExistsError:
        pass
    except OSError as exc:
        raise UserError(f"cannot create the state directory {state_dir}: {exc.strerror}",
                        hint="set PROMOTER_STATE_DIR to a writable directory") from None
    return state_dir


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


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on commit."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                           check_same_thread=False)
    # The file exists now; SQLite creates the -wal and -shm with its mode, so tighten it first
    # (the 0700 directory already keeps others out in between).
    make_private(path)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: the WAL is fsynced at every commit, so an acknowledged delivery survives power loss.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = sqlite3.Row
    return conn


def in_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
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


class StateDB:
    """Per-thread connections to one state.db; ``write``/``read`` translate SQLite errors."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: set[sqlite3.Connection] = set()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, state_dir: Path) -> StateDB:
        """The state database of ``state_dir``: created, migrated, old layout imported."""
        from promoter.state import legacy, schema

        db = cls(ensure_state_dir(Path(state_dir)) / DB_FILENAME)
        with db.errors_translated():
            schema.migrate(db.connection(), db.path)
        legacy.import_old_layout(db)
        return db

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, closed when the thread ends)."""
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            conn = connect(self.path)
            holder = _Holder(conn)
            self._local.holder = holder
            with self._lock:
                self._connections.add(conn)
            # Threads come and go (a heartbeat per job): close a connection with its thread.
            weakref.finalize(holder, _forget, conn, self._connections, self._lock)
        return holder.conn

    def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        with self.errors_translated():
            return in_transaction(self.connection(), body)

    def read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        with self.errors_translated():
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
        except sqlite3.Error as exc:
            raise TransientError(f"the state database {self.path} is unusable: {exc}",
                                 hint="check the state directory's disk space and permissions; "
                                      "another process may hold a long write lock") from exc


def state_db(state: Path | StateDB) -> StateDB:
    """``state`` itself, or the state database of the directory ``state``. Stores accept
    either, so a process can share one StateDB and a test can pass a bare directory."""
    return state if isinstance(state, StateDB) else StateDB.open(state)


class _Holder:
    """One thread's connection; collected (and the connection closed) when the thread ends."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


def _forget(conn: sqlite3.Connection, connections: set[sqlite3.Connection],
            lock: threading.Lock) -> None:
    with lock:
        connections.discard(conn)
    conn.close()
