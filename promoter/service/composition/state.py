"""The state database a process uses, from ``state.url``: SQLite (absent) or PostgreSQL.

SQLite: each caller opens ``<state_dir>/state.db`` as it always did (opening is cheap and
every store keeps its own per-thread connections). PostgreSQL: one PostgresStateDB (one
connection pool, one schema check) per process and server, shared by every store.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

from promoter.state.db import StateDB

if TYPE_CHECKING:
    from promoter.adapters.postgres_state import PostgresStateDB
    from promoter.service.audit import AuditTrail
    from promoter.settings import Settings

PASSWORD_VARIABLE = "PROMOTER_STATE_PASSWORD"  # noqa: S105 - the name, not a value
_shared: dict[tuple[object, ...], PostgresStateDB] = {}
_lock = threading.Lock()


def state_db(settings: Settings) -> StateDB:
    if not settings.state.url:
        return StateDB.open(settings.state_dir)
    from promoter.adapters.postgres_state import PostgresStateDB, StateUrl

    secret = settings.secret(PASSWORD_VARIABLE)
    password = secret.reveal() if secret is not None else None
    url = StateUrl(settings.state.url, password, settings.state.tls_options())
    check_url(url.url, url.options)
    # The password's digest, not the password, keys the cache (it may be in a core dump).
    digest = hashlib.sha256((password or "").encode()).hexdigest()
    key = (url.url, url.options, digest, settings.state.max_connections)
    with _lock:
        db = _shared.get(key)
        if db is None or db.closed:
            db = PostgresStateDB.connect(url, max_connections=settings.state.max_connections,
                                      state_dir=settings.state_dir)
            _shared[key] = db
    return db


def existing_state_db(settings: Settings) -> StateDB | None:
    """The state database for reading only, without bringing one into being: SQLite's
    state.db opened read-only when the file exists (None when it does not: nothing was
    recorded yet), PostgreSQL's as ``state_db`` (state.url set: the state exists)."""
    if settings.state.url:
        return state_db(settings)
    from promoter.state.sqlite import SqliteStateDB

    return SqliteStateDB.open_read_only(settings.state_dir)


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
