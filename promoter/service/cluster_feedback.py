"""Argo CD status flows back: MLflow tags, a bot note on the MR, audit entries.

Both status paths feed ``ClusterFeedback.observe``: the notifications webhook one cluster at a
time, `promoter status` with every Application of a (deployment, environment). The last known
row per cluster is kept in the state database (``state.db``), so a notification about one
cluster is judged with the others, and nothing is written again while the environment's status
is unchanged.

Telling works like an outbox (promoter.service.cluster_status_store): the summary last told is
stored with the telling under way, and an observation whose summary (judged from the stored
rows) differs from what was told claims the telling (one claim per environment, so concurrent
replicas tell a change once). The told summary is marked only after the telling succeeded; a
process killed in between (SIGKILL, OOM, node loss) leaves a claim that goes stale, and the
next observation tells again.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from promoter.core.cluster_status import Carries, ClusterStatus, EnvironmentStatus, summarise
from promoter.core.results import DEPLOYED, RUNNING_ROW, DeploymentStatus
from promoter.errors import NotFoundError, TransientError
from promoter.ports.pipeline import DeployedState, DeploymentLedger
from promoter.ports.registry import Registry
from promoter.service.audit import AuditTrail
from promoter.service.change_carriers import (
    ChangeCarriers,
    MergeRequests,
    Unanswered,
    change_carriers,
    never,
    unnamed,
)
from promoter.service.cluster_status_store import StatusStore

NOTE_HEADING = "Argo CD status"


class ForgeView(Protocol):
    """What the feedback needs of a forge (both providers' ``forge``)."""

    def upsert_note(self, iid: int, heading: str, body: str) -> None:
        """One bot comment per heading, edited in place."""

    def is_ancestor(self, commit: str, revision: str) -> bool:
        """True when ``revision`` contains ``commit`` (ports.forge.Forge.is_ancestor)."""


_ATTEMPTS = 5   # rounds of "a concurrent observation stored a revision we had not asked about"
# Tellings one observation may do: its own, then what concurrent replicas left untold. Bounded:
# under a storm of changes the next observation carries on.
_DRAIN_ROUNDS = 3


@dataclass(frozen=True)
class _Judgement:
    """What an environment's status is judged against, all from one ledger row: which
    revisions carry its change, and whether that change is one promoter cannot vouch for."""

    deployment: DeployedState | None
    carries: ChangeCarriers | Carries | None
    unverified: bool

    def summarise(self, rows: Iterable[ClusterStatus]) -> EnvironmentStatus:
        return summarise(rows, self.carries, unverified=self.unverified)

    def still_holds(self, current: DeployedState | None) -> bool:
        """Whether ``current`` (the ledger row read again) is the row judged against: same MR,
        version and status."""
        return _judged_on(current) == _judged_on(self.deployment)


def _judged_on(deployment: DeployedState | None) -> tuple[int | None, str, str] | None:
    if deployment is None:
        return None
    return deployment.mr_iid, deployment.version, deployment.status


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

    def _judgement(self, deployment: DeployedState | None) -> _Judgement:
        """How to judge the environment while the ledger row is ``deployment``. Deployed needs
        promoter's own record of a verified merge (status ``merged``): the forge saying the MR
        is merged is not enough, as the merge may have had a head promoter did not write, and
        the MR hook (or the sweep) that finds that out can record it after Argo CD reports."""
        if deployment is None:
            return _Judgement(None, None, unverified=False)
        unverified = deployment.status == DeploymentStatus.MERGED_UNVERIFIED
        if deployment.status != DeploymentStatus.MERGED:
            return _Judgement(deployment, never, unverified)
        return _Judgement(deployment, self._change_carriers(deployment), unverified)

    def _change_carriers(self, deployed: DeployedState) -> ChangeCarriers | Carries | None:
        """Which revisions carry ``deployed``'s merged MR (service.change_carriers)."""
        return change_carriers(deployed, self.merge_requests, self.forge)

    def observe(self, name: str, env: str, rows: list[ClusterStatus], *, complete: bool,
                actor: str, deleted: Sequence[ClusterStatus] = ()) -> EnvironmentStatus:
        """Take in ``rows`` of (name, env) (``complete``: they are all its clusters; ``deleted``:
        Applications being deleted, whose clusters stop counting) and, when the environment's
        status differs from what was last told (and no live telling of it is under way), tell
        MLflow, the MR and the audit trail."""
        judgement = self._judgement(self.ledger.by_deployment(name, env))
        status, claimed, was_deployed = self._judge(name, env, rows, complete, judgement,
                                                    deleted)
        for _ in range(_DRAIN_ROUNDS):
            if not claimed:
                return status
            try:
                told, judgement = self._tell(name, env, status, judgement, actor,
                                             was_deployed=was_deployed)
            except Exception:
                self.store.untold(name, env, status)   # so the next observation tries again
                raise
            # Killed before this line, the claim goes stale and the next observation tells
            # again: MLflow tags and the note are overwritten with the same values, but the
            # audit trail gets the argocd.status line a second time.
            self.store.told(name, env, status, told)
            # Drain: another replica may have told an older status after ours finished, or
            # stored a newer observation while ours was being told. Judge what is stored now
            # (storing nothing), against the ledger row the telling used (newer than the one
            # read above), and tell it if it still differs from what was told last; Argo CD
            # may never notify about this environment again.
            status, claimed, was_deployed = self._judge(name, env, [], False, judgement)
        return status

    def after_merge(self, name: str, env: str, *, actor: str) -> EnvironmentStatus | None:
        """A verified merge of (name, env) was just recorded: judge the clusters' stored rows
        again. Argo CD may have synced the merged revision before promoter recorded the merge
        (a late hook, the sweep): judged then, it was not deployed yet, and Argo CD may not
        notify again. Nothing stored (Argo CD never reported, or is not used): nothing is
        told, not even "unknown"."""
        if not self.store.rows(name, env):
            return None
        return self.observe(name, env, [], complete=False, actor=actor)

    def _judge(self, name: str, env: str, rows: list[ClusterStatus], complete: bool,
               judgement: _Judgement, deleted: Sequence[ClusterStatus] = (),
               ) -> tuple[EnvironmentStatus, bool, bool]:
        """Store ``rows`` and judge the environment: (status, claimed to tell, deployed as
        last told)."""
        carries = judgement.carries
        # A state database failure is a TransientError already (the StateDB translates it).
        for attempt in range(_ATTEMPTS):
            if isinstance(carries, ChangeCarriers):
                carries.learn(row.revision for row in [*rows, *self.store.rows(name, env)])
            try:
                return self.store.record(name, env, rows, complete=complete,
                                         summary=judgement.summarise, deleted=deleted)
            except Unanswered as unanswered:
                if not isinstance(carries, ChangeCarriers) or attempt + 1 == _ATTEMPTS:
                    raise TransientError("cluster status kept changing while promoter "
                                         "looked; the next observation tries again") from None
                carries.learn([unanswered.revision])
        raise AssertionError("unreachable")  # pragma: no cover

    def _rejudged(self, status: EnvironmentStatus, name: str, env: str,
                  judgement: _Judgement) -> tuple[EnvironmentStatus, _Judgement]:
        """``status`` judged again if the ledger row moved since ``judgement`` was made (an MR
        outcome recorded, a new promotion put): what is told must come from the row it is told
        about, or a version could be tagged deployed on another MR's merge."""
        current = self.ledger.by_deployment(name, env)
        if judgement.still_holds(current):
            return status, judgement
        judgement = self._judgement(current)
        if isinstance(judgement.carries, ChangeCarriers):
            judgement.carries.learn(row.revision for row in status.clusters)
        return judgement.summarise(status.clusters), judgement

    def _running_version(self, deployed: DeployedState | None, env: str) -> str | None:
        """The version the clusters' status is about: the row's, once merged (recorded, or
        merged on the forge and not recorded yet: the clusters may run it already); while the
        row follows a newer proposal still open, or one closed or refused, the version still
        live (MLflow's live_version), never the proposed one, which no cluster runs."""
        if deployed is None or deployed.status in RUNNING_ROW:
            return deployed.version if deployed else None
        if self.registry is None or self.merge_requests is None or deployed.mr_iid is None:
            return deployed.version   # cannot tell: as before, the row's
        try:
            merged = self.merge_requests.get(deployed.mr_iid).state == "merged"
        except NotFoundError:
            merged = False
        if merged:
            return deployed.version
        try:
            return self.registry.live_version(deployed.model, env)
        except NotFoundError:
            return None   # the registered model was deleted from MLflow: nothing to tag

    def _tell(self, name: str, env: str, status: EnvironmentStatus, judgement: _Judgement,
              actor: str, *, was_deployed: bool) -> tuple[EnvironmentStatus, _Judgement]:
        """Tell ``status`` and return what was told and the judgement it was told from: the
        ledger row is read again first, and ``status`` judged again if it moved, so MLflow,
        the audit trail and the MR note all tell about one row, judged on that very row."""
        status, judgement = self._rejudged(status, name, env, judgement)
        deployed = judgement.deployment
        running = self._running_version(deployed, env)
        if deployed is not None and self.registry is not None and running is not None:
            # A model deleted from MLflow (its removal MR open, or merged before Argo CD
            # pruned the app) has nothing to tag; the MR's status note is still told.
            told = functools.partial(self._told, deployed.model, running, env)
            with self.audit.writing_back(deployed.model, running, env):
                self.registry.write_back(deployed.model, running, env, _status_tags(
                    status, deployed, was_deployed,
                    told=told if judgement.carries is unnamed else None))
        # Audited once MLflow holds it: a failed write-back is audited write_back.failed
        # (audit.writing_back) and answered 503, and each of Argo CD's retries would otherwise
        # append this entry again for one change. Before the note: the note is edited in place,
        # and the entry records what MLflow was told even when the MR is gone.
        self.audit.record("argocd.status", actor=actor, name=name, env=env,
                          model=deployed.model if deployed else None,
                          version=running,
                          sync=status.sync, health=status.health, revision=status.revision,
                          deployed=status.deployed, unverified=status.unverified,
                          clusters={c.cluster: f"{c.sync}/{c.health}" for c in status.clusters})
        if deployed is not None and self.forge is not None and deployed.mr_iid is not None:
            # The MR is gone (deleted, or the row names another provider's MR): nothing to
            # annotate. MLflow and the audit trail hold the status; failing here left it
            # untold, so every later observation told it again (and the hook answered 503).
            with contextlib.suppress(NotFoundError):
                self.forge.upsert_note(deployed.mr_iid, NOTE_HEADING,
                                       status.note(deployed.version))
        return status, judgement

    def _told(self, model: str, version: str, env: str, revision: str) -> bool:
        """Whether MLflow's tags, as the last telling wrote them, leave ``version`` as it is
        in ``env`` with every cluster at ``revision``: not `deployed`, or `deployed` at a
        revision ``revision`` contains (promoter.<env>.revision is written with every status
        told; Argo CD moves its revision on with every later commit of the branch, which
        still runs the version unless another telling said otherwise)."""
        assert self.registry is not None
        tags = self.registry.model_version(model, version).tags
        if tags.get(f"promoter.{env}.status") != DEPLOYED:
            return True
        told_at = tags.get(f"promoter.{env}.revision")
        if told_at is None:
            return False
        carries = ChangeCarriers(told_at, self.forge)   # the told revision as the carrier
        carries.learn([revision])
        return carries(revision)


def _status_tags(status: EnvironmentStatus, deployed: DeployedState, was_deployed: bool, *,
                 told: Callable[[str], bool] | None = None) -> dict[str, str]:
    """The MLflow tags telling ``status`` of ``deployed``'s version. ``told``: given only
    when promoter cannot name a commit carrying the merge (so ``status`` is never deployed),
    whether what MLflow holds may stand with every cluster at a revision (ClusterFeedback
    ._told); called only when the clusters agree."""
    tags = status.tags()
    if status.unverified:
        # Written, not left alone: a `deployed` told before the foreign merge was recorded
        # (by an older promoter, or a telling that raced the MR outcome) is corrected.
        tags["status"] = DeploymentStatus.MERGED_UNVERIFIED.value
    elif deployed.status == DeploymentStatus.MERGED and not status.deployed and (
            not _left_alone(status, told) if told is not None else was_deployed):
        # A cluster fell out of Synced/Healthy: merged, not deployed. Only for a version
        # promoter recorded as merged: an open MR's version is not merged at all. With no
        # carrier named, the status is left alone only while every cluster is Synced and
        # Healthy at one revision, and, if MLflow says `deployed`, at the revision it was
        # told at or a later one containing it (taking back what the pipeline keeps on a
        # re-run of the version, on no evidence, is not the safe side). Anything else is
        # merged, whatever was told before: clusters apart or unwell, or agreeing on a
        # revision that does not contain `deployed`'s (the Application pinned back to the
        # pre-merge one runs the previous version).
        tags["status"] = DeploymentStatus.MERGED.value
    return tags


def _left_alone(status: EnvironmentStatus, told: Callable[[str], bool]) -> bool:
    """With no carrier named: whether every cluster is Synced and Healthy at one revision
    and what MLflow says may stand there. MLflow is read only when they agree (rare)."""
    if status.revision is None or not summarise(status.clusters).deployed:
        return False
    return told(status.revision)
