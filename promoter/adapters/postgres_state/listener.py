"""LISTEN on one channel from a dedicated connection; call back on every notification.

Idle workers sleep on an in-process condition; this thread turns a NOTIFY from any process
(an enqueue on another replica, `promoter jobs retry`) into a wake-up of that condition. When
the connection breaks, the thread reconnects; each time LISTEN takes effect it calls back once,
since a notification sent before then was not delivered, and the wake-up makes the worker look
for itself.

Notifications are one server's: after a failover that leaves the old primary up, read-only,
with its sessions open, every NOTIFY goes to the new primary, and a LISTEN left on the old one
hears nothing (the workers would fall back to their 15 s poll). So the thread also asks every
few seconds whether its server still takes writes, and reconnects (read-write, so to the new
primary) when it does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from promoter.adapters.postgres_state.connection import takes_writes

_log = logging.getLogger("promoter.state")
RECONNECT_SECONDS = 2.0
# How often the thread looks at its stop flag between notifications.
STOP_CHECK_SECONDS = 1.0
# How often it asks whether its server still takes writes (one tiny query).
WRITABLE_CHECK_SECONDS = 5.0


class Listener:
    def __init__(self, conninfo: str, channel: str, callback: Callable[[], None],
                 scrub: Callable[[str], str]) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._callback = callback
        self._scrub = scrub
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{channel}",
                                        daemon=True)
        self.listening = threading.Event()  # set once LISTEN is in effect (tests wait on it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(STOP_CHECK_SECONDS * 3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    self._listen(conn)  # until stopped, or its server takes no writes
            except psycopg.Error as exc:
                _log.warning("state notifications lost, reconnecting: %s",
                             self._scrub(str(exc)) or type(exc).__name__)
            self.listening.clear()
            self._stop.wait(RECONNECT_SECONDS)

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        if not takes_writes(conn):  # a host listed in state.url that is a standby now
            _log.warning("state notifications: the server reached takes no writes; "
                         "reconnecting")
            return
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        self.listening.set()
        # Whatever was sent before LISTEN took effect (at the first start, or while
        # reconnecting) is not delivered to us: one wake-up makes the worker look.
        self._callback()
        next_check = time.monotonic() + WRITABLE_CHECK_SECONDS
        while not self._stop.is_set():
            for _ in conn.notifies(timeout=STOP_CHECK_SECONDS):
                self._callback()
            if time.monotonic() >= next_check:
                if not takes_writes(conn):
                    _log.warning("state notifications: the server takes no writes any more "
                                 "(a failover?), so they go to another; reconnecting")
                    return
                next_check = time.monotonic() + WRITABLE_CHECK_SECONDS
