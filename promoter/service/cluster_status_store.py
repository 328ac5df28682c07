"""Where Argo CD status is kept between observations: the last row per (deployment,
environment, cluster), the summary last told with the telling under way per (deployment,
environment), and the notifications seen, in the state database (promoter.state).

``StatusStore.record`` stores an observation, summarises what is stored and claims the telling
in one transaction (promoter.service.cluster_feedback tells it); ``told``/``untold`` end the
claim. The telling works like an outbox: the told summary is marked only after the telling
succeeded, so a teller killed part-way leaves a claim that goes stale and is told again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from promoter.core.cluster_status import ClusterStatus, EnvironmentStatus
from promoter.service.hook_deliveries import Claim, HookDeliveries
from promoter.service.queue_ops import shared_now
from promoter.state.db import Connection, StateDB, state_db
from promoter.state.deliveries import PROCESSING_TAKEOVER_SECONDS

DELIVERY_SOURCE = "argocd"   # notifications seen, in the state database's one dedupe table
# A telling whose process died is never finished: the next observation tells again once the
# claim is this old. Far longer than a telling (an audit line, one MLflow write, one note,
# each with its own timeout), so a live teller keeps its claim; shorter than the webhook's
# claim on the notification itself, so Argo CD's retry that takes that over tells again too.
TELLING_TAKEOVER_SECONDS = PROCESSING_TAKEOVER_SECONDS / 2


class StatusStore:
    """The last row per (deployment, environment, cluster), the summary last told and the
    telling under way per (deployment, environment), and notifications seen: tables of the
    state database (promoter.state)."""

    def __init__(self, state: Path | StateDB, *, clock: Callable[[], float] | None = None,
                 takeover_after: float = TELLING_TAKEOVER_SECONDS) -> None:
        self.db = state_db(state)
        self.deliveries = HookDeliveries(self.db, DELIVERY_SOURCE)
        self.clock = clock or time.time
        self._on_database_clock = clock is None  # see queue_ops.shared_now
        self._takeover_after = takeover_after

    def claim(self, key: str) -> Claim:
        """Claim a notification for handling (see promoter.service.hook_deliveries)."""
        return self.deliveries.claim(_delivery_id(key))

    def claim_again(self, key: str) -> Claim:
        """Claim a notification seen before for handling again (see ``moved_on``)."""
        return self.deliveries.claim_again(_delivery_id(key))

    def moved_on(self, row: ClusterStatus, *, deleted: bool = False) -> bool:
        """Whether the stored row of ``row``'s cluster (a deletion mark included) is not what
        ``row`` stored (``deleted``: its deletion mark): another observation replaced it since.
        A report identical to one handled before is then not necessarily a re-delivery: without
        a health time, Healthy again after Degraded within one reconciledAt is the very first
        report once more. No row: a complete listing dropped the cluster, and an old report
        must not bring it back."""
        expected = ((DELETED_MARK, DELETED_MARK, None, row.since, row.application, None)
                    if deleted else (row.sync, row.health, row.revision, row.since,
                                     row.application, row.health_changed_at))
        found = self.db.read(lambda conn: conn.execute(
            "SELECT sync, health, revision, since, application, health_changed_at "
            "FROM cluster_status WHERE name = ? AND env = ? AND cluster = ?",
            (row.name, row.env, row.cluster)).fetchone())
        return found is not None and tuple(found) != expected

    def finish(self, held: Claim, status: str) -> None:
        self.deliveries.finish(held, status)

    def release(self, held: Claim) -> None:
        self.deliveries.release(held)

    def rows(self, name: str, env: str) -> list[ClusterStatus]:
        return self.db.read(lambda conn: _rows(conn, name, env))

    def environments(self) -> list[tuple[str, str]]:
        """Every (deployment, environment) with a cluster row stored (deletion marks aside):
        what a complete listing that saw none of its Applications must drop."""
        return self.db.read(lambda conn: [(name, env) for name, env in conn.execute(
            _SELECT_ENVIRONMENTS).fetchall()])

    def record(self, name: str, env: str, rows: list[ClusterStatus], *, complete: bool,
               summary: Callable[[list[ClusterStatus]], EnvironmentStatus],
               deleted: Sequence[ClusterStatus] = (),
               ) -> tuple[EnvironmentStatus, bool, bool]:
        """Store ``rows``, summarise what is stored and, when that needs telling, claim the
        telling, in one transaction: two observations of one
        environment (two clusters' notifications at once) each judge the rows as they are
        after their own write, and only one of them claims a given summary.
        ``deleted``: Applications being deleted, whose clusters stop counting (``_forget``).
        Returns (status, to tell: the caller owns the claim and must call ``told`` or
        ``untold``, deployed as last told)."""

        def write(conn: Connection) -> tuple[EnvironmentStatus, bool, bool]:
            conn.lock(f"cluster_summaries:{name}/{env}")
            _store(conn, name, env, rows, complete=complete)
            _forget(conn, name, env, deleted)
            status = summary(_rows(conn, name, env))
            tell, was_deployed = _observe_summary(conn, name, env, _digest(status),
                                                  shared_now(conn, self.clock(),
                                                             self._on_database_clock),
                                                  self._takeover_after)
            return status, tell, was_deployed

        return self.db.write(write)

    def told(self, name: str, env: str, status: EnvironmentStatus,
             told: EnvironmentStatus | None = None) -> None:
        """The telling claimed for ``status`` is done: mark what was told (``told``, when the
        teller corrected it, else ``status``) and end the claim (unless a newer summary's
        telling has claimed the environment meanwhile; that one marks itself when done)."""
        claimed, done = _digest(status), told or status
        self.db.write(lambda conn: conn.execute(
            "UPDATE cluster_summaries SET digest = ?, deployed = ?, "
            "telling_digest = CASE WHEN telling_digest = ? THEN NULL ELSE telling_digest END, "
            "telling_since = CASE WHEN telling_digest = ? THEN NULL ELSE telling_since END "
            "WHERE name = ? AND env = ?",
            (_digest(done), int(done.deployed), claimed, claimed, name, env)))

    def untold(self, name: str, env: str, status: EnvironmentStatus) -> None:
        """Telling ``status`` failed, perhaps half-way: give the claim up at once (rather than
        letting it go stale), so the next observation tells whatever it then sees."""
        self.db.write(lambda conn: conn.execute(
            "UPDATE cluster_summaries SET telling_since = NULL "
            "WHERE name = ? AND env = ? AND telling_digest = ?", (name, env, _digest(status))))


# A cluster whose Application was deleted keeps a row marked so (a tombstone: sync and health
# DELETED_MARK, since the deletion's reconciledAt), which is not a cluster of the environment
# (``_rows`` leaves it out: neither judged nor listed) but keeps a late retry of a report from
# before the deletion from bringing the cluster back: only a report with a later reconciledAt
# (the Application re-created) replaces it. Argo CD's values are never this.
DELETED_MARK = "(deleted)"
_GONE = f"cluster_status.sync = '{DELETED_MARK}' AND cluster_status.health = '{DELETED_MARK}'"
# Built from this module's constants only.
_SELECT_ROWS = (
    "SELECT name, env, cluster, sync, health, revision, since, application, "  # noqa: S608
    "health_changed_at FROM cluster_status WHERE name = ? AND env = ? "
    f"AND NOT ({_GONE}) ORDER BY cluster")
_SELECT_ENVIRONMENTS = (
    "SELECT DISTINCT name, env FROM cluster_status "  # noqa: S608
    f"WHERE NOT ({_GONE}) ORDER BY name, env")
_SELECT_CLUSTERS = (
    "SELECT cluster FROM cluster_status WHERE name = ? AND env = ? "  # noqa: S608
    f"AND NOT ({_GONE})")


def _rows(conn: Connection, name: str, env: str) -> list[ClusterStatus]:
    found = conn.execute(
        _SELECT_ROWS, (name, env)).fetchall()
    return [ClusterStatus(*row) for row in found]


# When an observation replaces the stored row of its cluster. Argo CD notifications arrive late
# or out of order (retries after a 5xx, two controllers), and a listing can be older than a
# notification already stored: ordered by reconciledAt (``since``); a row without it never
# replaces one with it. Within one reconciledAt (Argo CD bumps it only when it compares with
# git, not when a resource event changes the health), when both observations carry
# status.health.lastTransitionTime, the later health time wins; with equal health times, a
# report that is Synced and Healthy does not replace one that is not (taking it blindly could
# tag `deployed` over a Degraded report that came first in fact; the next refresh, a newer
# reconciledAt, settles it). When either lacks the health time (an older template, Argo CD not
# sending it, a row stored before the column), nothing orders them but arrival: the later one
# replaces the stored row, as before health times were kept; refusing it would keep a cluster
# Degraded for good once Healthy came under the same reconciledAt.
# A deleted Application's tombstone (``_GONE``) is replaced by a later reconciledAt, or by an
# observation with none: an Application re-created and not reconciled yet (listed or reported
# OutOfSync/Missing). Keeping that one out would judge the environment without a cluster that
# runs it again and has not synced; a late retry of a report without one can only hold
# `deployed` back, never grant it.
_READY = "excluded.sync = 'Synced' AND excluded.health = 'Healthy'"
_STORED_READY = "cluster_status.sync = 'Synced' AND cluster_status.health = 'Healthy'"
_REPLACES = (
    "cluster_status.since IS NULL OR excluded.since > cluster_status.since "
    f"OR (({_GONE}) AND excluded.since IS NULL) "
    f"OR (NOT ({_GONE}) AND excluded.since = cluster_status.since AND ("
    " excluded.health_changed_at IS NULL OR cluster_status.health_changed_at IS NULL"
    " OR excluded.health_changed_at > cluster_status.health_changed_at"
    " OR (excluded.health_changed_at = cluster_status.health_changed_at"
    f"     AND NOT ({_READY} AND NOT ({_STORED_READY})))))")
# Built from this module's constants only.
_UPSERT = (
    "INSERT INTO cluster_status (name, env, cluster, sync, health, revision, since, "  # noqa: S608
    "application, health_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (name, env, cluster) DO UPDATE SET "
    "sync = excluded.sync, health = excluded.health, revision = excluded.revision, "
    "since = excluded.since, application = excluded.application, "
    f"health_changed_at = excluded.health_changed_at WHERE {_REPLACES}")


def _store(conn: Connection, name: str, env: str, rows: list[ClusterStatus], *,
           complete: bool) -> None:
    """Upsert ``rows``, each only over an observation it is not older than (``_REPLACES``).
    ``complete``: the rows are every cluster of (name, env); the others go."""
    if complete:   # tombstones stay: a late retry of a deleted Application's report
        stored = conn.execute(_SELECT_CLUSTERS, (name, env)).fetchall()
        gone = sorted({found[0] for found in stored} - {row.cluster for row in rows})
        if gone:
            conn.executemany("DELETE FROM cluster_status WHERE name = ? AND env = ? AND "
                             "cluster = ?", [(name, env, cluster) for cluster in gone])
    conn.executemany(
        _UPSERT,
        [(r.name, r.env, r.cluster, r.sync, r.health, r.revision, r.since, r.application,
          r.health_changed_at) for r in rows])


def _forget(conn: Connection, name: str, env: str, deleted: Sequence[ClusterStatus]) -> None:
    """Mark the row of each cluster whose Application is being deleted as gone (a tombstone,
    see ``DELETED_MARK``): it no longer runs the environment, and its last row would keep
    `deployed` from every later version; a late retry of one of its older reports must not
    bring it back. Only over the row that Application reported, and not one observed after the
    deletion's report (a re-created Application's, delivered first); with no row stored (its
    reports not delivered yet) the tombstone is stored all the same."""
    conn.executemany(
        "INSERT INTO cluster_status (name, env, cluster, sync, health, revision, since, "
        "application, health_changed_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, NULL) "
        "ON CONFLICT (name, env, cluster) DO UPDATE SET sync = excluded.sync, "
        "health = excluded.health, revision = NULL, since = excluded.since, "
        "health_changed_at = NULL WHERE cluster_status.application = excluded.application "
        "AND (cluster_status.since IS NULL OR excluded.since IS NULL "
        "OR cluster_status.since <= excluded.since)",
        [(name, env, row.cluster, DELETED_MARK, DELETED_MARK, row.since, row.application)
         for row in deleted])


def _observe_summary(conn: Connection, name: str, env: str, digest: str,
                     now: float, takeover_after: float) -> tuple[bool, bool]:
    """Claim the telling of the summary observed (``digest``) unless MLflow already holds it
    (it is the summary last told, ``cluster_summaries.digest``, and no telling is under way)
    or a live telling of exactly it is. A claim that went stale or was given up means a
    telling stopped part-way: what MLflow holds is unknown, so any summary is told. The
    observed summary itself is not stored: the rows it comes from are. Returns (claimed,
    deployed as last told). The caller holds the environment's lock (``record``)."""
    # '' until something is told: every summary differs from it.
    conn.execute("INSERT INTO cluster_summaries (name, env, digest, deployed) "
                 "VALUES (?, ?, '', 0) ON CONFLICT (name, env) DO NOTHING", (name, env))
    told, told_deployed, telling, since = conn.execute(
        "SELECT digest, deployed, telling_digest, telling_since FROM cluster_summaries "
        "WHERE name = ? AND env = ?", (name, env)).fetchone()
    if telling is None:
        claim = digest != told
    else:
        live = since is not None and since > now - takeover_after
        claim = not (live and telling == digest)
    if claim:
        conn.execute("UPDATE cluster_summaries SET telling_digest = ?, telling_since = ? "
                     "WHERE name = ? AND env = ?", (digest, now, name, env))
    return claim, bool(told_deployed)


def _delivery_id(key: str) -> str:
    """A notification's dedupe key, hashed: the key itself can be long."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _digest(status: EnvironmentStatus) -> str:
    data: list[object] = [status.sync, status.health, status.revision, status.deployed,
                          [[c.cluster, c.sync, c.health, c.revision] for c in status.clusters]]
    if status.unverified:   # only then: the digests already told stay the same
        data.append("unverified")
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()
