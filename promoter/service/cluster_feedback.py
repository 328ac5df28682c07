"""Argo CD status flows back: MLflow tags, a bot note on the MR, audit entries.

Both status paths feed ``ClusterFeedback.observe``: the notifications webhook one cluster at a
time, `promoter status` with every Application of a (deployment, environment). The last known
row per cluster is kept in the state database (``state.db``), so a notification about one
cluster is judged with the others, and nothing is written again while the environment's status
is unchanged.

Telling works like an outbox: the summary last told is stored with the telling under way, and
an observation whose summary (judged from the stored rows) differs from what was told claims
the telling (one claim per environment, so concurrent replicas tell a change once). The told
summary is marked only after the telling succeeded; a process killed in between (SIGKILL, OOM,
node loss) leaves a claim that goes stale, and the next observation tells again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from promoter.core.cluster_status import Carries, ClusterStatus, EnvironmentStatus, summarise
from promoter.core.results import DeploymentStatus
from promoter.errors import PromoterError, TransientError, UserError
from promoter.ports.git import MergeRequest
from promoter.ports.pipeline import DeploymentLedger
from promoter.ports.registry import Registry
from promoter.service.audit import AuditTrail
from promoter.service.hook_deliveries import HookClaim, HookDeliveries
from promoter.service.queue_ops import shared_now
from promoter.state.db import Connection, StateDB, state_db
from promoter.state.deliveries import PROCESSING_TAKEOVER_SECONDS

NOTE_HEADING = "Argo CD status"
DELIVERY_SOURCE = "argocd"   # notifications seen, in the state database's one dedupe table
# A telling whose process died is never finished: the next observation tells again once the
# claim is this old. Far longer than a telling (an audit line, one MLflow write, one note,
# each with its own timeout), so a live teller keeps its claim; shorter than the webhook's
# claim on the notification itself, so Argo CD's retry that takes that over tells again too.
TELLING_TAKEOVER_SECONDS = PROCESSING_TAKEOVER_SECONDS / 2


class ForgeView(Protocol):
    """What the feedback needs of a forge (both providers' ``forge``)."""

    def upsert_note(self, iid: int, heading: str, body: str) -> None:
        """One bot comment per heading, edited in place."""

    def is_ancestor(self, commit: str, revision: str) -> bool:
        """True when ``revision`` contains ``commit`` (ports.forge.Forge.is_ancestor)."""


class MergeRequests(Protocol):
    def get(self, iid: int) -> MergeRequest: ...


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

    def claim(self, key: str) -> HookClaim:
        """Claim a notification for handling (see promoter.service.hook_deliveries)."""
        return self.deliveries.claim(_delivery_id(key))

    def finish(self, key: str, status: str) -> None:
        self.deliveries.finish(_delivery_id(key), status)

    def release(self, key: str) -> None:
        self.deliveries.release(_delivery_id(key))

    def rows(self, name: str, env: str) -> list[ClusterStatus]:
        return self.db.read(lambda conn: _rows(conn, name, env))

    def store(self, name: str, env: str, rows: Iterable[ClusterStatus], *,
              complete: bool) -> None:
        self.db.write(lambda conn: _store(conn, name, env, list(rows), complete=complete))

    def record(self, name: str, env: str, rows: list[ClusterStatus], *, complete: bool,
               summary: Callable[[list[ClusterStatus]], EnvironmentStatus],
               ) -> tuple[EnvironmentStatus, bool, bool]:
        """Store ``rows``, summarise what is stored and, when that needs telling, claim the
        telling, in one transaction: two observations of one
        environment (two clusters' notifications at once) each judge the rows as they are
        after their own write, and only one of them claims a given summary.
        Returns (status, to tell: the caller owns the claim and must call ``told`` or
        ``untold``, deployed as last told)."""

        def write(conn: Connection) -> tuple[EnvironmentStatus, bool, bool]:
            conn.lock(f"cluster_summaries:{name}/{env}")
            _store(conn, name, env, rows, complete=complete)
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


def _rows(conn: Connection, name: str, env: str) -> list[ClusterStatus]:
    found = conn.execute(
        "SELECT name, env, cluster, sync, health, revision, since, application "
        "FROM cluster_status WHERE name = ? AND env = ? ORDER BY cluster", (name, env)).fetchall()
    return [ClusterStatus(*row) for row in found]


def _store(conn: Connection, name: str, env: str, rows: list[ClusterStatus], *,
           complete: bool) -> None:
    """Upsert ``rows``, each only over an observation that is not newer: Argo CD's
    notifications can arrive late or out of order (retries, two controllers), and a listing
    can be older than a notification already stored. A row without a time never replaces one
    with a time. ``complete``: the rows are every cluster of (name, env); the others go."""
    if complete:
        stored = conn.execute("SELECT cluster FROM cluster_status WHERE name = ? AND env = ?",
                              (name, env)).fetchall()
        gone = sorted({found[0] for found in stored} - {row.cluster for row in rows})
        if gone:
            conn.executemany("DELETE FROM cluster_status WHERE name = ? AND env = ? AND "
                             "cluster = ?", [(name, env, cluster) for cluster in gone])
    conn.executemany(
        "INSERT INTO cluster_status VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name, env, cluster) DO UPDATE SET "
        "sync = excluded.sync, health = excluded.health, revision = excluded.revision, "
        "since = excluded.since, application = excluded.application "
        "WHERE cluster_status.since IS NULL OR excluded.since >= cluster_status.since",
        [(r.name, r.env, r.cluster, r.sync, r.health, r.revision, r.since, r.application)
         for r in rows])


def _observe_summary(conn: Connection, name: str, env: str, digest: str,
                     now: float, takeover_after: float) -> tuple[bool, bool]:
    """Claim the telling of the summary observed (``digest``) unless MLflow already holds it
    (it is the summary last told, ``cluster_summaries.digest``, and no telling is under way)
    or a live telling of exactly it is. A claim that went stale or was given up means a
    telling stopped part-way: what MLflow holds is unknown, so any summary is told. The
    observed summary itself is not stored: the rows it comes from are. Returns (claimed,
    deployed as last told)."""
    conn.lock(f"cluster_summaries:{name}/{env}")
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


class _Unanswered(Exception):
    """A stored revision nobody asked the git provider about yet (written meanwhile by a
    concurrent observation): leave the transaction, ask, and run it again."""

    def __init__(self, revision: str) -> None:
        super().__init__(revision)
        self.revision = revision


class _ChangeCarriers:
    """Which revisions contain the merged change, asked of the git provider outside any
    state-database transaction (a GitLab call must not hold the database's write lock)."""

    def __init__(self, commit: str, forge: ForgeView | None) -> None:
        self.commit = commit
        self.forge = forge
        self.known: dict[str, bool] = {}

    def learn(self, revisions: Iterable[str | None]) -> None:
        for revision in revisions:
            if revision is not None and revision not in self.known:
                self.known[revision] = revision == self.commit or (
                    self.forge is not None and self.forge.is_ancestor(self.commit, revision))

    def __call__(self, revision: str) -> bool:
        if revision not in self.known:
            raise _Unanswered(revision)
        return self.known[revision]


def _never(revision: str) -> bool:
    return False   # the MR is not merged: no revision carries it yet


_ATTEMPTS = 5   # rounds of "a concurrent observation stored a revision we had not asked about"
# Tellings one observation may do: its own, then what concurrent replicas left untold. Bounded:
# under a storm of changes the next observation carries on.
_DRAIN_ROUNDS = 3


def _delivery_id(key: str) -> str:
    """A notification's dedupe key, hashed: the key itself can be long."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _digest(status: EnvironmentStatus) -> str:
    data: list[object] = [status.sync, status.health, status.revision, status.deployed,
                          [[c.cluster, c.sync, c.health, c.revision] for c in status.clusters]]
    if status.unverified:   # only then: the digests already told stay the same
        data.append("unverified")
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


class ClusterFeedback:
    def __init__(self, store: StatusStore, ledger: DeploymentLedger, audit: AuditTrail,
                 registry: Registry | None = None, forge: ForgeView | None = None,
                 merge_requests: MergeRequests | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.audit = audit
        self.registry = registry
        self.forge = forge
        self.merge_requests = merge_requests

    def change_carriers(self, name: str, env: str) -> _ChangeCarriers | Carries | None:
        """Whether a revision contains the deployment's merged MR: its merge commit (or head,
        for a fast-forward) is that revision or an ancestor of it; never while the MR is not
        merged; None when promoter cannot tell (no MR known, or no provider)."""
        deployed = self.ledger.by_deployment(name, env)
        if deployed is None or deployed.mr_iid is None or self.merge_requests is None:
            return None
        try:
            mr = self.merge_requests.get(deployed.mr_iid)
        except UserError:   # the MR is gone (deleted project, other provider): cannot tell
            return None
        if mr.state != "merged":
            return _never
        commit = mr.merge_commit_sha or mr.head_sha
        return _ChangeCarriers(commit, self.forge) if commit else None

    def observe(self, name: str, env: str, rows: list[ClusterStatus], *, complete: bool,
                actor: str) -> EnvironmentStatus:
        """Take in ``rows`` of (name, env) (``complete``: they are all its clusters) and,
        when the environment's status differs from what was last told (and no live telling
        of it is under way), tell MLflow, the MR and the audit trail."""
        carries = self.change_carriers(name, env)
        unverified = self.merged_unverified(name, env)
        status, claimed, was_deployed = self._judge(name, env, rows, complete, carries,
                                                    unverified)
        for _ in range(_DRAIN_ROUNDS):
            if not claimed:
                return status
            try:
                told = self._tell(name, env, status, actor,
                                  undeployed=was_deployed and not status.deployed)
            except Exception:
                self.store.untold(name, env, status)   # so the next observation tries again
                raise
            # Killed before this line, the claim goes stale and the next observation tells
            # again: MLflow tags and the note are overwritten with the same values, but the
            # audit trail gets the argocd.status line a second time.
            self.store.told(name, env, status, told)
            # What the ledger said while telling is newer than what was read above: a foreign
            # merge recorded meanwhile keeps the version unverified in the drain rounds too.
            unverified = told.unverified
            # Drain: another replica may have told an older status after ours finished, or
            # stored a newer observation while ours was being told. Judge what is stored now
            # (storing nothing) and tell it if it still differs from what was told last;
            # Argo CD may never notify about this environment again.
            status, claimed, was_deployed = self._judge(name, env, [], False, carries,
                                                        unverified)
        return status

    def merged_unverified(self, name: str, env: str) -> bool:
        """Whether the deployment's MR was merged with a head promoter did not write: then
        Argo CD syncing the target branch says nothing about the version promoter checked."""
        deployed = self.ledger.by_deployment(name, env)
        return deployed is not None and deployed.status == DeploymentStatus.MERGED_UNVERIFIED

    def _judge(self, name: str, env: str, rows: list[ClusterStatus], complete: bool,
               carries: _ChangeCarriers | Carries | None,
               unverified: bool) -> tuple[EnvironmentStatus, bool, bool]:
        """Store ``rows`` and judge the environment: (status, claimed to tell, deployed as
        last told)."""
        # A state database failure is a TransientError already (the StateDB translates it).
        for attempt in range(_ATTEMPTS):
            if isinstance(carries, _ChangeCarriers):
                carries.learn(row.revision for row in [*rows, *self.store.rows(name, env)])
            try:
                return self.store.record(name, env, rows, complete=complete,
                                         summary=lambda stored: summarise(
                                             stored, carries, unverified=unverified))
            except _Unanswered as unanswered:
                if not isinstance(carries, _ChangeCarriers) or attempt + 1 == _ATTEMPTS:
                    raise TransientError("cluster status kept changing while promoter "
                                         "looked; the next observation tries again") from None
                carries.learn([unanswered.revision])
        raise AssertionError("unreachable")  # pragma: no cover

    def _tell(self, name: str, env: str, status: EnvironmentStatus, actor: str, *,
              undeployed: bool) -> EnvironmentStatus:
        """Tell ``status`` (judged from the ledger as ``observe`` read it) and return what was
        told: the ledger row is read again here, and a merge with a foreign head recorded since
        (merged_unverified) makes the told status unverified, so the version is never tagged
        deployed in MLflow, in the audit trail or in the MR note."""
        deployed = self.ledger.by_deployment(name, env)
        if (deployed is not None and deployed.status == DeploymentStatus.MERGED_UNVERIFIED
                and not status.unverified):
            status = status.of_unverified_change()
        self.audit.record("argocd.status", actor=actor, name=name, env=env,
                          model=deployed.model if deployed else None,
                          version=deployed.version if deployed else None,
                          sync=status.sync, health=status.health, revision=status.revision,
                          deployed=status.deployed, unverified=status.unverified,
                          clusters={c.cluster: f"{c.sync}/{c.health}" for c in status.clusters})
        if deployed is None:
            return status
        if self.registry is not None:
            try:
                tags = status.tags()
                if undeployed and not status.unverified:
                    # A cluster fell out of Synced/Healthy: merged, not deployed. An unverified
                    # version keeps merged_unverified: it is never told deployed nor merged.
                    tags["status"] = "merged"
                self.registry.write_back(deployed.model, deployed.version, env, tags)
            except PromoterError as exc:
                self.audit.record("write_back.failed", model=deployed.model,
                                  version=deployed.version, env=env, reason=exc.message)
                raise
        if self.forge is not None and deployed.mr_iid is not None:
            self.forge.upsert_note(deployed.mr_iid, NOTE_HEADING, status.note(deployed.version))
        return status
