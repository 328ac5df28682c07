"""PostgresStateDB: the state database in PostgreSQL, behind promoter.state.db.StateDB.

A connection pool serves ``read``/``write`` (each call borrows one connection for one
transaction, READ COMMITTED). Statements that decide from rows they then change serialise
explicitly (Connection.lock, conditional updates, FOR UPDATE SKIP LOCKED in the claim), so
any number of processes on any number of hosts can share the database. Deadlocks and
serialisation failures are retried here; every other driver error becomes a TransientError
(or a StateConflict for a broken uniqueness rule) whose message names the server redacted.

Failover: every connection asks libpq for a read-write session (``target_session_attrs``,
unless state.url says otherwise), so with several hosts in state.url a new connection skips
standbys. A connection the server refuses writes on (a primary demoted under it) or ends for
a shutdown raises StateUnavailable and is closed, never lent again: the pool's next one finds
the new primary.

Read-only (``open_read_only``, for `policy check`): every session of the pool runs with
``default_transaction_read_only`` on, so the server refuses any write, and the schema is only
checked, never migrated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from promoter.adapters.postgres_state import schema
from promoter.adapters.postgres_state.connection import PgConnection, Row, row_factory
from promoter.adapters.postgres_state.leader import AdvisoryLeadership
from promoter.adapters.postgres_state.listener import Listener
from promoter.adapters.postgres_state.url import StateUrl
from promoter.errors import ConfigError, TransientError
from promoter.state.db import Connection, Leadership, StateConflict, StateDB, StateUnavailable

T = TypeVar("T")
_log = logging.getLogger("promoter.state")
CONNECT_TIMEOUT_SECONDS = 10
POOL_TIMEOUT_SECONDS = 30.0
DEADLOCK_RETRIES = 3
# Set on every pooled session, server side. A replica cut off by the network (no FIN, no RST)
# inside a transaction would otherwise keep its session, and every advisory lock it holds,
# for the kernel's 2 hours: every other replica's writer then waits on that lock, answering
# no delivery at all. Keepalives end such a session after about a minute; the idle-in-
# transaction limit ends one whose client is alive but stuck (no transaction of promoter's
# waits on anything outside the database).
SESSION_SETTINGS = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10,
                    "tcp_keepalives_count": 3,
                    "idle_in_transaction_session_timeout": 300_000}   # milliseconds
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
# The server, not the statement: read-only (25006: a standby, a demoted primary,
# default_transaction_read_only) or going away (57P01 admin shutdown, e.g. a failover tool
# terminating sessions; 57P02 crash; 57P03 starting up or in recovery). Retrying on the same
# session cannot help: it is closed, and a new one looks for the read-write host.
SERVER_CANNOT_WRITE = (pg_errors.ReadOnlySqlTransaction, pg_errors.AdminShutdown,
                       pg_errors.CrashShutdown, pg_errors.CannotConnectNow)


def read_write_session(url: StateUrl) -> dict[str, str]:
    """libpq's ``target_session_attrs=read-write`` unless state.url chose its own: with several
    hosts listed, a connection then lands on the one that takes writes, not on a standby
    (libpq tries each host in turn and refuses a read-only session)."""
    if "target_session_attrs" in conninfo_to_dict(url.conninfo()):
        return {}
    return {"target_session_attrs": "read-write"}


def _limit_session(conn: psycopg.Connection[Row]) -> None:
    for setting, value in SESSION_SETTINGS.items():
        conn.execute(f"SET {setting} = {int(value)}")
    conn.commit()  # a session setting; the pool wants the connection idle


def _read_only_session(conn: psycopg.Connection[Row]) -> None:
    # The server's guarantee, not ours: any INSERT, UPDATE, DDL or nextval() of a transaction
    # on this session fails (25006) instead of writing.
    conn.execute("SET default_transaction_read_only = on")
    _limit_session(conn)


class PostgresStateDB(StateDB):
    dialect = "postgresql"

    def __init__(self, url: StateUrl, *, max_connections: int = 10,
                 state_dir: Path | None = None, read_only: bool = False) -> None:
        self.url = url
        # Messages and the legacy code paths name a path; PostgreSQL has none, so a stand-in.
        self._path = (state_dir or Path(".")) / "postgresql"
        # Keepalives: a transaction on a connection the network silently dropped fails after
        # about a minute (then it is retried) instead of hanging until the kernel gives up.
        self._conninfo = url.conninfo(connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                      application_name="promoter", keepalives=1,
                                      keepalives_idle=30, keepalives_interval=10,
                                      keepalives_count=3, **read_write_session(url))
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = \
            psycopg_pool.ConnectionPool(
                self._conninfo, min_size=1, max_size=max(2, max_connections), open=False,
                kwargs={"row_factory": row_factory}, timeout=POOL_TIMEOUT_SECONDS,
                # A server restart leaves dead connections in the pool: check before lending.
                check=psycopg_pool.ConnectionPool.check_connection, name="promoter-state",
                configure=_read_only_session if read_only else _limit_session)
        self._closed = False
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    @classmethod
    def connect(cls, url: StateUrl, *, max_connections: int = 10,
             state_dir: Path | None = None) -> PostgresStateDB:
        """Connect and bring the schema up to date (once, whichever process comes first)."""
        db = cls(url, max_connections=max_connections, state_dir=state_dir)
        with db._translated():
            # One plain connection first: an unreachable server or a refused login fails at
            # once with the server's reason, not after the pool's wait.
            with psycopg.connect(db._conninfo, autocommit=True) as conn:
                schema.migrate(conn, url.describe())
            db._pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
        return db

    @classmethod
    def open_read_only(cls, url: StateUrl, *, state_dir: Path | None = None) -> PostgresStateDB:
        """The database as it is, for reading only: every transaction READ ONLY, the schema
        checked, not migrated (ConfigError when it is missing, older or newer than this
        promoter's; TransientError when the server cannot be reached)."""
        db = cls(url, max_connections=2, state_dir=state_dir, read_only=True)
        with db._translated():
            with psycopg.connect(db._conninfo, autocommit=True) as conn:
                conn.execute("SET default_transaction_read_only = on")
                schema.require_current(conn, url.describe())
            db._pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
        return db

    @property
    def path(self) -> Path:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        return self.url.describe()

    @property
    def fatal_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.OperationalError, pg_errors.InFailedSqlTransaction, *_RETRIED,
                *SERVER_CANNOT_WRITE)

    @property
    def wakes_other_processes(self) -> bool:
        return True

    def write(self, body: Callable[[Connection], T]) -> T:
        return self._run(body)

    def read(self, body: Callable[[Connection], T]) -> T:
        return self._run(body)

    def listen(self, channel: str, callback: Callable[[], None]) -> Callable[[], None]:
        listener = Listener(self._conninfo, channel, callback, self.url.scrub)
        listener.start()
        with self._lock:
            self._listeners.append(listener)
        return listener.stop

    def leadership(self, name: str) -> Leadership:
        return AdvisoryLeadership(self._conninfo, name, self.url.scrub)

    def close(self) -> None:
        with self._lock:
            self._closed, listeners, self._listeners = True, self._listeners, []
        for listener in listeners:
            listener.stop()
        self._pool.close()

    def _run(self, body: Callable[[Connection], T]) -> T:
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                with self._translated(), self._pool.connection() as conn:
                    wrapped = PgConnection(conn)
                    try:
                        value = body(wrapped)
                        wrapped.flush_notifications()
                    except SERVER_CANNOT_WRITE:
                        # Returned open, the pool would lend this session again and again:
                        # closed, it is replaced by a new one (on the read-write host).
                        conn.close()
                        raise
                    return value  # the pool commits (or rolls back) here
            except TransientError as exc:
                if not isinstance(exc.__cause__, _RETRIED) or attempt == DEADLOCK_RETRIES:
                    raise
                _log.info("state transaction retried after %s", type(exc.__cause__).__name__)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except pg_errors.IntegrityError as exc:
            raise StateConflict(f"the state database {self.describe()} refused a write: "
                                f"{self.url.scrub(str(exc))}",
                                hint="another process wrote the same record; try again"
                                ) from exc
        except SERVER_CANNOT_WRITE as exc:
            raise StateUnavailable(f"the state database {self.describe()} takes no writes on "
                                   f"this connection: {self.url.scrub(str(exc))}",
                                   hint="a failover or restart under way? promoter reconnects "
                                        "to whichever host in state.url takes writes; list "
                                        "every one there") from exc
        except pg_errors.InsufficientPrivilege as exc:
            raise ConfigError(f"the state database {self.describe()} refused promoter: "
                              f"{self.url.scrub(str(exc))}",
                              hint="grant the role in state.url CREATE and DML rights on "
                                   "its database") from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise TransientError(f"the state database {self.describe()} is unusable: "
                                 f"{self.url.scrub(str(exc)) or type(exc).__name__}",
                                 hint="check that PostgreSQL is up and reachable, and the "
                                      "state.url, TLS options and PROMOTER_STATE_PASSWORD"
                                 ) from exc


