"""LISTEN on one channel from a dedicated connection; call back on every notification.

Idle workers sleep on an in-process condition; this thread turns a NOTIFY from any process
(an enqueue on another replica, `promoter jobs retry`) into a wake-up of that condition. When
the connection breaks, the thread reconnects; each time LISTEN takes effect it calls back once,
since a notification sent before then was not delivered, and the wake-up makes the worker look
for itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

_log = logging.getLogger("promoter.state")
RECONNECT_SECONDS = 2.0
# How often the thread looks at its stop flag between notifications.
STOP_CHECK_SECONDS = 1.0


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
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.listening.set()
                    # Whatever was sent before LISTEN took effect (at the first start, or while
                    # reconnecting) is not delivered to us: one wake-up makes the worker look.
                    self._callback()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=STOP_CHECK_SECONDS):
                            self._callback()
            except psycopg.Error as exc:
                self.listening.clear()
                _log.warning("state notifications lost, reconnecting: %s",
                             self._scrub(str(exc)) or type(exc).__name__)
                self._stop.wait(RECONNECT_SECONDS)
