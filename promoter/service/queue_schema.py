"""The job queue's SQLite file: how to connect, and the schema with its migrations.

The schema version lives in SQLite's own ``PRAGMA user_version``; each entry of MIGRATIONS
moves the file one version forward, inside one write transaction, so several processes opening
an old file at once migrate it exactly once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

DB_FILENAME = "promoter.db"
# Delivery ids are kept this long: far past any sender's retry window and the webhook timestamp
# tolerance, after which a replay is rejected by its timestamp anyway.
DELIVERY_RETENTION_SECONDS = 7 * 24 * 3600
BUSY_TIMEOUT_SECONDS = 30.0

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, deliveries seen, per-step results.
    """
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        model            TEXT NOT NULL,
        version          TEXT NOT NULL,
        env              TEXT NOT NULL,
        action           TEXT NOT NULL,
        state            TEXT NOT NULL
                         CHECK (state IN ('queued', 'running', 'retrying', 'done', 'dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        payload          TEXT NOT NULL DEFAULT '{}',
        result           TEXT NOT NULL DEFAULT '{}',
        reason           TEXT,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        next_run_at      REAL NOT NULL,
        lease_owner      TEXT,
        lease_expires_at REAL
    );
    CREATE INDEX jobs_by_model_env ON jobs (model, env, id);
    CREATE INDEX jobs_unfinished ON jobs (id)
        WHERE state IN ('queued', 'running', 'retrying');
    CREATE TABLE deliveries (
        source      TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        job_id      INTEGER REFERENCES jobs (id),
        received_at REAL NOT NULL,
        PRIMARY KEY (source, delivery_id)
    ) WITHOUT ROWID;
    CREATE TABLE job_steps (
        job_id      INTEGER NOT NULL REFERENCES jobs (id),
        name        TEXT NOT NULL,
        result      TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (job_id, name)
    ) WITHOUT ROWID;
    """,
    # 2: delivery ids are forgotten after a retention period; find old ones without a scan.
    """
    CREATE INDEX deliveries_by_age ON deliveries (received_at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(db_path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on commit."""
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: the WAL is fsynced at every commit, so an acknowledged delivery survives power loss.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.row_factory = sqlite3.Row
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to SCHEMA_VERSION; returns the version found before."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found >= SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])  # another process won?
        for version in range(found, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction first; split instead (no ';' in literals).
    return [part.strip() for part in script.split(";") if part.strip()]
