"""The state database a process uses, from ``state.url``: SQLite (absent) or PostgreSQL.

SQLite: each caller opens ``<state_dir>/state.db`` as it always did (opening is cheap and
every store keeps its own per-thread connections). PostgreSQL: one PostgresStateDB (one
connection pool, one schema check) per process and server, shared by every store.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from promoter.errors import ConfigError, PromoterError, TransientError
from promoter.state.db import StateDB

if TYPE_CHECKING:
    from promoter.adapters.postgres_state import PostgresStateDB, StateUrl
    from promoter.service.audit import AuditTrail
    from promoter.settings import Settings

PASSWORD_VARIABLE = "PROMOTER_STATE_PASSWORD"  # noqa: S105 - the name, not a value
_shared: dict[tuple[object, ...], PostgresStateDB] = {}
_lock = threading.Lock()


def state_db(settings: Settings) -> StateDB:
    if not settings.state.url:
        return StateDB.open(settings.state_dir)
    from promoter.adapters.postgres_state import PostgresStateDB

    url = _state_url(settings)
    # The password's digest, not the password, keys the cache (it may be in a core dump).
    digest = hashlib.sha256((url.password or "").encode()).hexdigest()
    key = (url.url, url.options, digest, settings.state.max_connections)
    with _lock:
        db = _shared.get(key)
        if db is None or db.closed:
            db = PostgresStateDB.connect(url, max_connections=settings.state.max_connections,
                                      state_dir=settings.state_dir)
            _shared[key] = db
    return db


@dataclass(frozen=True)
class StateForReading:
    """The state database opened for reading only (None: there is none yet, or it cannot be
    read), and why it cannot be read (None: it can, or there is nothing to read)."""

    db: StateDB | None
    unreadable: PromoterError | None = None


@contextmanager
def state_for_reading(settings: Settings) -> Iterator[StateForReading]:
    """The state database for reading only, without bringing one into being or changing it
    (`policy check`), closed on exit. SQLite: state.db read as it is (state.sqlite
    ``open_read_only``), none when the file does not exist (nothing recorded yet). PostgreSQL:
    READ ONLY sessions and a schema that is checked, never migrated; a schema missing, older
    or newer than this promoter's, or a server that cannot be reached, is ``unreadable``
    (the caller says what it could not check), while a malformed state.url still fails."""
    db: StateDB | None
    if not settings.state.url:
        from promoter.state.sqlite import SqliteStateDB

        db = SqliteStateDB.open_read_only(settings.state_dir)
    else:
        from promoter.adapters.postgres_state import PostgresStateDB

        url = _state_url(settings)
        try:
            db = PostgresStateDB.open_read_only(url, state_dir=settings.state_dir)
        except (ConfigError, TransientError) as exc:
            yield StateForReading(None, exc)
            return
    try:
        yield StateForReading(db)
    finally:
        if db is not None:
            db.close()


def _state_url(settings: Settings) -> StateUrl:
    """state.url with its password and TLS options, checked as libpq would (ConfigError)."""
    from promoter.adapters.postgres_state import StateUrl

    secret = settings.secret(PASSWORD_VARIABLE)
    password = secret.reveal() if secret is not None else None
    url = StateUrl(settings.state.url or "", password, settings.state.tls_options())
    check_url(url.url, url.options)
    return url


def audit_trail(settings: Settings) -> AuditTrail:
    """The audit trail: files beside SQLite's state.db, or tables of the PostgreSQL state."""
    from promoter.service.audit import AuditTrail

    if not settings.state.url:
        return AuditTrail(settings.state_dir)
    return AuditTrail(settings.state_dir, state_db(settings))


def describe(settings: Settings) -> str:
    """Where the state lives, safe to log."""
    return redact_url(settings.state.url) if settings.state.url else str(settings.state_dir)


def check_url(url: str, options: tuple[tuple[str, str], ...] = ()) -> None:
    """ConfigError for a PostgreSQL URL (and TLS options) libpq would refuse: said before
    connecting, since a refused connection is read as an outage and retried."""
    from promoter.adapters.postgres_state.url import check

    check(url, options)


def redact_url(url: str) -> str:
    """A PostgreSQL URL without its password, for messages."""
    from promoter.adapters.postgres_state import redact

    return redact(url)
