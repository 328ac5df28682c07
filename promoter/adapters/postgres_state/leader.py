"""One leader among every process sharing the database: a session-level advisory lock.

The lock is held by a dedicated connection for as long as this process leads. When the
process dies (even by SIGKILL) its connection closes and PostgreSQL releases the lock with
the session, so a follower's next attempt (every few seconds) takes over. ``held()`` both
tries to take the lock and checks that the session holding it is still alive; a leader whose
connection broke stops leading at once (another process may already have taken over).

A lock is one server's: after a failover that leaves the old primary up, read-only, with its
sessions open, the old leader's lock lives on there while every new session lands on the new
primary, where the lock is free, and a second leader would take it. So ``held()`` also asks
whether its session's server still takes writes; if not, it drops the session (and the lock,
and the lead) and the next call connects afresh, read-write, to the new primary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg.conninfo import make_conninfo

from promoter.adapters.postgres_state.connection import takes_writes

_log = logging.getLogger("promoter.state")
CONNECT_TIMEOUT_SECONDS = 5
# Probe an idle leadership connection after 10 s, every 5 s, give up after 3 misses.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}
SERVER_KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5,
                     "tcp_keepalives_count": 3}


class AdvisoryLeadership:
    def __init__(self, conninfo: str, name: str, scrub: Callable[[str], str]) -> None:
        self._conninfo = make_conninfo(conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                       **KEEPALIVES)
        self._name = name
        self._scrub = scrub
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._leading = False

    def held(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
                # The server side too: a leader cut off by the network (no FIN, no RST) loses
                # its session, and so the lock, after ~25 s instead of the kernel's 2 hours.
                for setting, value in SERVER_KEEPALIVES.items():
                    self._conn.execute(f"SET {setting} = {int(value)}")
                self._leading = False
            # On a server that takes no writes (a failover's old primary) a lock leads no one;
            # asking also proves the session, and so the lock, still lives.
            if not takes_writes(self._conn):
                self._leave_read_only_server()
                return False
            if not self._leading:
                row = self._conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                         (f"promoter-leader:{self._name}",)).fetchone()
                self._leading = bool(row and row[0])
                if self._leading:
                    _log.info("leading %s", self._name)
        except psycopg.Error as exc:
            if self._leading:
                _log.warning("lost the lead of %s: %s", self._name,
                             self._scrub(str(exc)) or type(exc).__name__)
            self._drop()
        return self._leading

    def release(self) -> None:
        self._drop()

    def _leave_read_only_server(self) -> None:
        """Stop leading from (or trying to lead on) a server that no longer takes writes: a
        failover's old primary, where other processes' locks cannot be seen any more."""
        if self._leading:
            _log.warning("lost the lead of %s: its state database server takes no writes any "
                         "more (a failover?); reconnecting to the one that does", self._name)
        self._drop()

    def _drop(self) -> None:
        self._leading = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()  # ends the session: the lock goes with it
