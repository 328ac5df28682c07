"""The one webhook-dedupe table: delivery ids from MLflow, Databricks and GitLab hooks.

A row is (source, delivery id): ``source`` is the sender ("mlflow", "databricks", "gitlab",
...), so ids from different senders never collide. ``job_id`` is set when the delivery made
or matched a job; ``status`` is the answer given to a GitLab hook delivery. All sources share
one retention, pruned by the worker's housekeeping.
"""

from __future__ import annotations

from promoter.state.db import Connection

# Longer than any sender's retry window (GitLab re-sends failed hooks for days) and than the
# webhook timestamp tolerance, after which a replay is refused by its timestamp anyway.
DELIVERY_RETENTION_SECONDS = 14 * 24 * 3600


def claim(conn: Connection, source: str, delivery_id: str, now: float,
          status: str | None = None) -> bool:
    """Record a delivery that made no job; True the first time it is seen."""
    cursor = conn.execute(
        "INSERT INTO deliveries (source, delivery_id, job_id, received_at, status) "
        "VALUES (?, ?, NULL, ?, ?) ON CONFLICT DO NOTHING", (source, delivery_id, now, status))
    return cursor.rowcount == 1


def set_status(conn: Connection, source: str, delivery_id: str, status: str) -> None:
    conn.execute("UPDATE deliveries SET status = ? WHERE source = ? AND delivery_id = ?",
                 (status, source, delivery_id))


def forget(conn: Connection, source: str, delivery_id: str) -> None:
    conn.execute("DELETE FROM deliveries WHERE source = ? AND delivery_id = ?",
                 (source, delivery_id))


def prune(conn: Connection, cutoff: float) -> int:
    """Forget every delivery received before ``cutoff``; returns how many."""
    return conn.execute("DELETE FROM deliveries WHERE received_at < ?", (cutoff,)).rowcount
