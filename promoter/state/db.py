"""The one state database: the interface every store uses, whichever backend holds it.

Every piece of promoter's own state (job queue, webhook dedupe, reconcile cursor, deployment
ledger, pushed MR heads, local merge requests) is read and written only through a ``StateDB``:
``write(body)`` runs ``body`` in one write transaction, ``read(body)`` runs it on a connection
without one. Two backends keep the same contract:

- SQLite (promoter.state.sqlite): ``<state_dir>/state.db``, the default. Every write takes the
  file's write lock up front (``BEGIN IMMEDIATE``), so writers never interleave.
- PostgreSQL (promoter.adapters.postgres_state), when ``state.url`` is set: writers run
  concurrently; statements that read and then write the same rows serialise on what they
  touch (``Connection.lock``, conditional updates, ``FOR UPDATE SKIP LOCKED``).

Stores write portable SQL (``?`` placeholders, ``INSERT … ON CONFLICT``, ``RETURNING``) and
read rows by position or by column name; the PostgreSQL backend translates the placeholders.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from promoter.errors import TransientError, UserError

T = TypeVar("T")
# Owner only: the database holds MR heads, webhook ids and job payloads from the registry.
DIR_MODE = 0o700
FILE_MODE = 0o600
DB_FILENAME = "state.db"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...  # column names first: [(name, ...), ...]

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What a store's statements may use inside ``read``/``write``."""

    dialect: str  # "sqlite" or "postgresql", for the rare statement that must differ

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    def lock(self, name: str) -> None:
        """Serialise this transaction with every other one that locks ``name`` (until it
        ends). SQLite: nothing to do, every write transaction already excludes the others."""

    def try_lock(self, name: str) -> bool:
        """``lock`` without waiting: False (and nothing held) when another transaction holds
        ``name``. SQLite: always True, as for ``lock``."""

    def lock_all(self, names: Sequence[str]) -> None:
        """``lock`` each of ``names``, in this order, in one go, before any savepoint; a later
        ``lock`` of one of them costs nothing. Callers pass them sorted, so two transactions
        locking overlapping sets cannot deadlock."""

    def notify(self, channel: str) -> None:
        """Tell listeners in other processes (see StateDB.listen) once this transaction
        commits. SQLite: nothing (other processes poll)."""


class StateConflict(TransientError):
    """A write broke a uniqueness rule (e.g. a second open MR for one branch)."""

    kind = "state_conflict"


class StateUnavailable(TransientError):
    """The state database cannot take writes on this connection, whatever the statement: the
    server is read-only (a standby, a primary demoted by a failover) or shutting down. The
    backend drops the connection, so the next one finds the server that takes writes; callers
    treat it as an outage (503 with Retry-After, /readyz not ready), unlike a StateConflict,
    which is about the write itself."""

    kind = "state_unavailable"


class Leadership(Protocol):
    """One holder at a time among every process sharing the state (see StateDB.leadership)."""

    def held(self) -> bool:
        """Try to be (or stay) the holder; True while this process is."""

    def release(self) -> None: ...


class StateDB(abc.ABC):
    """The state database of one deployment of promoter (see the module docstring)."""

    #: "sqlite" or "postgresql": for messages, metrics and the few choices that differ.
    dialect: str = ""

    @classmethod
    def open(cls, state_dir: Path) -> StateDB:
        """The SQLite state database of ``state_dir``: created, migrated, old layout imported.
        (A PostgreSQL one comes from the composition root, which reads ``state.url``.)"""
        from promoter.state.sqlite import SqliteStateDB

        return SqliteStateDB.open(state_dir)

    @property
    @abc.abstractmethod
    def path(self) -> Path:
        """The state directory's database file (SQLite) or a stand-in path for messages."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the state lives, safe to log (no password)."""

    @abc.abstractmethod
    def write(self, body: Callable[[Connection], T]) -> T: ...

    @abc.abstractmethod
    def read(self, body: Callable[[Connection], T]) -> T: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    def fatal_errors(self) -> tuple[type[BaseException], ...]:
        """Driver errors that end a whole transaction (not one statement of it)."""
        return ()

    @property
    def wakes_other_processes(self) -> bool:
        """True when ``notify`` reaches listeners in other processes (no need to poll fast)."""
        return False

    def listen(self, channel: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever a transaction notifies ``channel``; returns a stopper.
        The default (SQLite) never calls it: other processes' work is found by polling."""
        return lambda: None

    def leadership(self, name: str) -> Leadership:
        """Who runs ``name`` (e.g. the reconcile loop). The default: every process does, as
        a single host always did."""
        return _AlwaysLeader()


class _AlwaysLeader:
    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


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


def state_db(state: Path | StateDB) -> StateDB:
    """``state`` itself, or the (SQLite) state database of the directory ``state``. Stores
    accept either, so a process can share one StateDB and a test can pass a bare directory."""
    return state if isinstance(state, StateDB) else StateDB.open(state)
