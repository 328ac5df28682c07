"""What a webhook answer says about a failure of promoter's own storage: its kind, never the
state database's address or a file's path (service/public_errors.py)."""

from __future__ import annotations

import sqlite3

import psycopg

from promoter.errors import TransientError
from promoter.service.public_errors import public_reason

URL = "postgresql://promoter@pg-prod.internal.corp:5432/promoter"


def _wrapped(cause: BaseException, message: str) -> TransientError:
    error = TransientError(message)
    error.__cause__ = cause
    return error


def test_a_state_database_outage_is_named_by_kind_however_deep_its_cause() -> None:
    """The queue's writer wraps the backend's error, which wraps the driver's: both wrappers
    quote the text below them, which names the host."""
    driver = psycopg.OperationalError('connection to server at "pg-prod.internal.corp" failed')
    backend = _wrapped(driver, f"the state database {URL} is unusable: {driver}")
    queue = _wrapped(backend, f"the job queue could not store the delivery: {backend}")
    for error in (backend, queue):
        assert public_reason(error) == "the state database is unusable (OperationalError)"


def test_a_sqlite_or_disk_failure_keeps_its_kind_and_drops_its_path() -> None:
    disk = _wrapped(OSError(28, "No space left on device", "/var/lib/promoter/state.db"),
                    "the job queue could not store the delivery: /var/lib/promoter/state.db")
    assert public_reason(_wrapped(disk, f"wrapped: {disk}")) == \
        "ENOSPC: No space left on device"
    locked = _wrapped(sqlite3.OperationalError("database is locked"), "/srv/state.db: locked")
    assert public_reason(locked) == "database is locked"
    assert public_reason(TransientError("cannot write /srv/x/y.json")) == \
        "cannot write <path>"
