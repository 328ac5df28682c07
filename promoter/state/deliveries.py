"""The one webhook-dedupe table: delivery ids from MLflow, Databricks and GitLab hooks.

A row is (source, delivery id): ``source`` is the sender ("mlflow", "databricks", "gitlab",
...), so ids from different senders never collide. ``job_id`` is set when the delivery made
or matched a job; ``status`` is the answer given to a GitLab hook delivery. All sources share
one retention, pruned by the worker's housekeeping.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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


# The status of a hook delivery being handled right now (its answer replaces it when done).
PROCESSING = "processing"
# A hook handler that dies (SIGKILL, OOM, node loss) never releases its claim: a re-delivery
# takes such a claim over once it is this old. Far longer than a hook's own worst case (a few
# state writes and forge calls, each with its own timeout), so a live handler keeps its claim.
PROCESSING_TAKEOVER_SECONDS = 300.0


class HookClaim(enum.Enum):
    ACT = "act"                  # the first delivery, or one taking over a dead handler's claim
    DONE = "done"                # answered before: a duplicate
    IN_PROGRESS = "in_progress"  # another delivery is being handled: answer "try again later"


@dataclass(frozen=True)
class Claim:
    """A delivery's claim as one handler got it. ``outcome`` says what to do; ``stamp`` (the
    time written into the row, for ACT) names this handler's hold: a handler that outlived
    the takeover age finds its stamp replaced, and its answer or release then touches nothing
    of its successor's claim."""

    source: str
    delivery_id: str
    outcome: HookClaim
    stamp: float = 0.0


def claim_processing(conn: Connection, source: str, delivery_id: str, now: float,
                     takeover_after: float = PROCESSING_TAKEOVER_SECONDS) -> Claim:
    """Claim a hook delivery for handling. A claim still ``processing`` is not a duplicate:
    its handler may have died or be failing, so the sender must retry rather than be told it
    is done; past ``takeover_after`` seconds the claim is taken over by this delivery."""
    if claim(conn, source, delivery_id, now, status=PROCESSING):
        return Claim(source, delivery_id, HookClaim.ACT, now)
    # One conditional update: of two re-deliveries racing for a stale claim, one wins.
    if conn.execute(
            "UPDATE deliveries SET received_at = ? WHERE source = ? AND delivery_id = ? "
            "AND status = ? AND received_at <= ?",
            (now, source, delivery_id, PROCESSING, now - takeover_after)).rowcount == 1:
        return Claim(source, delivery_id, HookClaim.ACT, now)
    row = conn.execute("SELECT status FROM deliveries WHERE source = ? AND delivery_id = ?",
                       (source, delivery_id)).fetchone()
    # No row: the claim was released (its handler failed) since our insert; the sender's
    # next retry claims it afresh.
    if row is None or row["status"] == PROCESSING:
        return Claim(source, delivery_id, HookClaim.IN_PROGRESS)
    return Claim(source, delivery_id, HookClaim.DONE)




def claim_again(conn: Connection, source: str, delivery_id: str, now: float,
                takeover_after: float = PROCESSING_TAKEOVER_SECONDS) -> Claim:
    """Claim a delivery answered before for handling again: a report identical to one handled
    that the receiver finds to mean something new this time (the Argo CD hook: the same
    report, Healthy again after a Degraded one, promoter.service.argocd_hook). ACT when this
    took the answered row over; otherwise as ``claim_processing`` finds it (another handler
    claimed it again first: IN_PROGRESS; released meanwhile: claimed afresh)."""
    if conn.execute(
            "UPDATE deliveries SET status = ?, received_at = ? WHERE source = ? "
            "AND delivery_id = ? AND status <> ?",
            (PROCESSING, now, source, delivery_id, PROCESSING)).rowcount == 1:
        return Claim(source, delivery_id, HookClaim.ACT, now)
    return claim_processing(conn, source, delivery_id, now, takeover_after)


def answer(conn: Connection, held: Claim, status: str) -> bool:
    """Record a held claim's answer; False (nothing written) when it was taken over."""
    return conn.execute("UPDATE deliveries SET status = ? WHERE source = ? AND delivery_id = ? "
                        "AND status = ? AND received_at = ?",
                        (status, *_hold(held))).rowcount == 1


def release(conn: Connection, held: Claim) -> bool:
    """Forget a held claim so the sender's retry is handled; False (nothing deleted) when it
    was taken over: the successor's claim stays."""
    return conn.execute("DELETE FROM deliveries WHERE source = ? AND delivery_id = ? "
                        "AND status = ? AND received_at = ?", _hold(held)).rowcount == 1


def _hold(held: Claim) -> tuple[str, str, str, float]:
    """Match the row only while it is still the caller's hold: ``processing``, its stamp."""
    if held.outcome is not HookClaim.ACT:
        raise ValueError(f"{held.outcome.name} is not a hold of delivery {held.delivery_id!r}")
    return held.source, held.delivery_id, PROCESSING, held.stamp


def prune(conn: Connection, cutoff: float) -> int:
    """Forget every delivery received before ``cutoff``; returns how many."""
    return conn.execute("DELETE FROM deliveries WHERE received_at < ?", (cutoff,)).rowcount
