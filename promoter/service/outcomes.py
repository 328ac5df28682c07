"""What reviewers do on a merge request flows back to MLflow tags, the ledger and the audit.

Both providers call ``MergeRequestOutcomes`` the same way: GitLab through its webhook (only
when the MR head is the commit promoter pushed), the local provider from ``promoter mr``.

A merge or close of promoter's MR with a head someone else pushed (``event.foreign_head``:
passed on by the hook and the sweep so it is not lost) is recorded as its own audit event,
``mr.merge_foreign`` / ``mr.close_foreign``, never as ``mr.merge``: promoter did not check what
reached the branch. Its version becomes ``merged_unverified`` (a close: ``closed``),
``live_version`` does not move, the ledger row stops waiting on the MR, and a merge gets a note
on the MR saying the head was not verified.

An event is about the version its MR deploys (recorded with the head promoter pushed), which
is not always the deployment's current one: a merge hook can arrive after the alias moved on
and a newer MR was opened on the same branch. Such an MR's outcome is written back and
audited for its own version; the ledger row, which follows the newest MR, is left alone.
Such an MR's model is the one promoter pushed it for, never the row's: a deployment name that
its owner gave up is taken over by the next model claiming it (StateLedger.claim_name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

from promoter.core import gc
from promoter.core.gc import PROPOSED, Overlay
from promoter.core.mr_events import SETTLING, ForgeEvent, MergeRequestEvent, PipelineEvent
from promoter.core.mr_text import FOREIGN_HEAD_NOTE, foreign_head_text
from promoter.core.results import DeploymentStatus, replaced_status
from promoter.errors import PermanentError, PromoterError, TransientError
from promoter.ports.forge import Forge
from promoter.ports.git import GC_BRANCH, GC_KEY, GitProvider
from promoter.ports.pipeline import DeployedState
from promoter.ports.registry import Registry
from promoter.service.audit import AuditTrail
from promoter.service.ledger import StateLedger
from promoter.service.logs import log
from promoter.service.outcome_claims import OutcomeClaims
from promoter.state.gc_pending import GcPending
from promoter.state.pushed_heads import PushedHeads

_log = logging.getLogger("promoter.outcomes")
# MR Hook action -> promoter.<env>.status. "approval" (one of several approvals) is audited only.
STATUS_FOR_ACTION = {"approved": "approved", "merge": "merged", "close": "closed"}
# ... and what they make of the version when the MR's head was someone else's: a merge
# deployed something promoter never checked (not live, not "merged"); a close deployed nothing.
FOREIGN_STATUS_FOR_ACTION = {"merge": DeploymentStatus.MERGED_UNVERIFIED,
                             "close": DeploymentStatus.CLOSED}
# The statuses whose recording moves promoter.<env>.live_version.
LIVE_MOVING = frozenset({DeploymentStatus.MERGED, DeploymentStatus.DECOMMISSIONED})


class MergeRequestOutcomes:
    def __init__(self, registry: Registry | None, ledger: StateLedger, audit: AuditTrail,
                 heads: PushedHeads, claims: OutcomeClaims | None = None,
                 forge: Callable[[], Forge | None] | None = None,
                 target_overlays: Callable[[], Collection[tuple[str, str]]] | None = None,
                 after_merge: Callable[[str, str], None] | None = None) -> None:
        self.registry = registry
        self.ledger = ledger
        self.audit = audit
        self.heads = heads
        self.claims = claims or OutcomeClaims(ledger.db)
        # Where notes go (built when first needed: only a foreign merge writes one).
        self._forge = forge
        # (name, env) of the overlays on the target branch now, read when a GC merge is
        # recorded; None (no branch to read): what GC planned counts as removed.
        self._target_overlays = target_overlays
        self.gc_pending = GcPending(ledger.db)
        # Told (name, env) once a verified merge is recorded: Argo CD's stored status is
        # judged again (ClusterFeedback.after_merge), as it may have reported first.
        self._after_merge = after_merge

    def __call__(self, event: ForgeEvent) -> None:
        if isinstance(event, PipelineEvent):
            self.audit.record("pipeline", pipeline_id=event.pipeline_id, status=event.status,
                              ref=event.ref, sha=event.head_sha, iid=event.iid,
                              name=event.name, env=event.env)
            return
        if not isinstance(event, MergeRequestEvent) or not event.name or not event.env:
            return
        # A GC merge request's merge decommissions what it removes: recorded twice (two
        # deliveries of its hook without one Idempotency-Key), a later run would mark a
        # version deployed again since as decommissioned and clear its live_version.
        record = self._garbage_collection if (event.name, event.env) == GC_KEY else \
            self._record
        if event.action not in SETTLING:
            record(event)
            return
        # Settling outcomes reach several handlers (the hook, the sweep, other replicas):
        # claimed first, so exactly one of them audits, tags and moves live_version.
        with self.claims.outcome(event) as ours:
            if ours:
                record(event)
            else:
                self._already_recorded(event)
                if (event.name, event.env) == GC_KEY:
                    # Recorded in full before (its note is removed last, but may have been
                    # written again since): the MR sweep stops following it.
                    self.gc_pending.recorded(event.iid)

    def gc_mr_gone(self, project_id: int, iid: int) -> None:
        """GC's MR ``iid``, noted as unrecorded, is not on the forge any more (an owner
        deleted it): the sweep stops following it. Unmerged, it removed nothing; merged while
        its hook was lost, it did. The target branch tells which: every overlay any of its
        proposals planned that the branch no longer has is decommissioned as the merge would
        have done it, the rest left as they are. Claimed as its merge (a merge recorded
        already, or recorded later, is not recorded twice); audited as ``gc.mr_gone``; the
        note goes last."""
        proposals = self._gc_proposals(iid)
        url = str(proposals[-1].get("url") or "") if proposals else ""
        event = MergeRequestEvent(
            action="merge", project_id=project_id, project_path="", iid=iid, state="deleted",
            source_branch=GC_BRANCH, target_branch="", head_sha=None, url=url,
            user="reconcile", name=GC_KEY[0], env=GC_KEY[1])
        with self.claims.outcome(event) as ours:
            if ours:
                self._garbage_collection(event, deleted=True)
        self.gc_pending.recorded(iid)

    def _subject(self, event: MergeRequestEvent
                 ) -> tuple[DeployedState | None, bool, str | None, str | None]:
        """The event's deployment row; whether it still names this MR (rows written before
        MRs were recorded in the ledger have no iid: theirs is current); the version the MR was
        for and its model: the row's while current, else the ones promoter pushed to the MR.
        An older MR's model is never taken from the row: the name may have changed hands
        since (claim_name), and the row then is another model's. None when the push record
        does not name it (pushed before models were recorded): the outcome is unattributed."""
        assert event.name is not None and event.env is not None
        state = self.ledger.by_deployment(event.name, event.env)
        if state is not None and state.mr_iid in (None, event.iid):
            return state, True, state.version, state.model
        version, model = self.heads.pushed_proposal(event.project_id, event.iid)
        return state, False, version, model

    def _record(self, event: MergeRequestEvent) -> None:
        """Audit the outcome, write it back to MLflow (moving live_version for a merge), then
        settle the ledger row. A merge or close whose head promoter did not push
        (``event.foreign_head``) is its own audit event (``mr.merge_foreign``) with a status
        that claims nothing was verified, and never moves live_version; its ledger row stops
        waiting on the MR, so the sweep lets it be and the next promotion proposes afresh."""
        assert event.name is not None and event.env is not None
        state, current, version, model = self._subject(event)
        status = self._status(event, state if current else None)
        if current and state is not None and event.action in SETTLING and \
                state.status == status:
            # Recorded before outcomes were claimed (or its claim was pruned since).
            self._already_recorded(event)
            return
        foreign: dict[str, Any] = {}
        if event.foreign_head:
            assert event.pushed_sha is not None
            foreign = {"pushed_sha": event.pushed_sha, "head_pushed_by_promoter": False}
            if event.action == "merge":
                # First: the note is edited in place (recorded once however often this
                # runs), and a forge failure here leaves nothing written: the retry starts clean.
                self._note(event.iid, FOREIGN_HEAD_NOTE, foreign_head_text(
                    event.env, event.head_sha, event.pushed_sha, version))
        known = model is not None and version is not None
        # An MR whose model or version promoter cannot tell (its push record predates models
        # being recorded, or there is none): audited as such, nothing written to MLflow.
        unattributed: dict[str, Any] = {} if known else {"unattributed": True}
        with self._live_version_held(model, event.env, status):
            # The merge entries carry model, version and status: `audit live` replays them.
            self.audit.record(f"mr.{event.action}{'_foreign' if foreign else ''}",
                              actor=event.user or "unknown", name=event.name, env=event.env,
                              iid=event.iid, url=event.url, user=event.user,
                              head_sha=event.head_sha, **foreign,
                              model=model if known else None,
                              version=version if known else None,
                              status=status if known else None,
                              **unattributed)
            if status is None or model is None or version is None:
                return
            if self.registry is not None:
                self._write_back(model, version, event.env, event.url, status)
        # Last: the ledger's status is what the reconcile sweep waits on, so it moves only
        # once MLflow has the outcome too; and only if the row still names this MR (a newer
        # promotion may have put it during the calls above: that row is not ours to settle).
        if current and state is not None:
            self.ledger.settle(state, status)
            if status == DeploymentStatus.MERGED and self._after_merge is not None:
                self._deployed_already(event.name, event.env)

    def _deployed_already(self, name: str, env: str) -> None:
        """The merge is recorded in full; a failure to judge Argo CD's status again is not
        the merge's: logged, and the next observation tells it."""
        assert self._after_merge is not None
        try:
            self._after_merge(name, env)
        except PromoterError as exc:
            log(_log, logging.WARNING, "Argo CD status not judged again after the merge; the "
                "next observation tells it", name=name, env=env, error=exc.message)

    @staticmethod
    def _status(event: MergeRequestEvent, current: DeployedState | None) -> str | None:
        """What the outcome makes of the version (None: nothing, e.g. one of several
        approvals of a removal MR)."""
        if event.foreign_head:
            return FOREIGN_STATUS_FOR_ACTION[event.action]
        status = STATUS_FOR_ACTION.get(event.action)
        if current is not None and current.status == DeploymentStatus.DECOMMISSIONING:
            # A removal MR: approving it changes nothing yet (and must not overwrite the
            # "decommissioning" the merge below is recognised by); merging it removes the model.
            status = {"approved": None, "merged": DeploymentStatus.DECOMMISSIONED}.get(
                status or "", status)
        elif current is not None and current.status == DeploymentStatus.DECOMMISSIONED:
            # A removal MR settling after a GC merge already removed its overlay (and
            # decommissioned its row): its merge is that decommission, recorded already; its
            # close changes nothing (the model does not get its name back, nor its version a
            # "closed" tag, nor live_version a version that is not deployed).
            status = DeploymentStatus.DECOMMISSIONED if status == "merged" else None
        return status

    def _note(self, iid: int, heading: str, body: str) -> None:
        forge = self._forge() if self._forge is not None else None
        if forge is not None:
            forge.upsert_note(iid, heading, body)

    def _live_version_held(self, model: str | None, env: str,
                           status: str | None) -> AbstractContextManager[None]:
        """The (model, env) live_version claim, for an outcome that moves it."""
        if self.registry is None or model is None or status not in LIVE_MOVING:
            return nullcontext()
        return self.claims.live_version(model, env)

    def _already_recorded(self, event: MergeRequestEvent) -> None:
        # The webhook after the reconcile sweep (or the sweep after the hook) must not
        # audit, tag or move live_version twice.
        log(_log, logging.INFO, "MR outcome already recorded", name=event.name,
            env=event.env, iid=event.iid, action=event.action, actor=event.user)

    def _write_back(self, model: str, version: str, env: str, url: str, status: str) -> None:
        assert self.registry is not None
        try:
            self.registry.write_back(model, version, env, {"status": status, "mr_url": url})
            if status in LIVE_MOVING:
                self._track_live(model, version, env, status)
        except PromoterError as exc:
            # The hook handler releases the delivery (a re-delivery acts again), the reconcile
            # sweep looks again next pass, and `promoter mr` says so. The audit keeps the fact.
            self.audit.record("write_back.failed", model=model, version=version,
                              env=env, status=status, reason=exc.message)
            log(_log, logging.WARNING, "could not write the MR outcome back to MLflow",
                model=model, version=version, env=env, reason=exc.message)
            raise

    def _garbage_collection(self, event: MergeRequestEvent, *, deleted: bool = False) -> None:
        """A GC merge request's outcome. Its merge removes overlays, so it counts as the
        decommission of each (as a removal MR's merge does): `audit live`, the ledger and
        ``live_version`` must not go on naming a version the target branch no longer runs.

        The MR was planned earlier and its merge may be recorded late (a re-delivery after a
        failed write-back, the MR sweep), and its head may not be promoter's
        (``event.foreign_head``): only an overlay the target branch no longer has is
        decommissioned; one it still has (deployed again since, or kept by someone's head)
        is audited as ``gc.skipped``. Each overlay's ledger row and ``live_version`` change
        only while they still name the model and version it removed. Every ``live_version``
        claim is taken and every MLflow call made before the audit trail is written, so a busy
        claim or an MLflow failure leaves no audit entry for the retry to write again. The
        GC-level entry comes after the per-overlay work and the unrecorded note goes last: a
        recording cut short is done again by the MR sweep (recorded possibly twice, never
        zero times)."""
        # Deleted: which head merged, if any, is unknown; every proposal's plan is checked
        # against the target branch (what it still has stays).
        planned = self._gc_removals(event, every_proposal=deleted) \
            if event.action == "merge" else []
        kept = self._still_on_target(planned)
        gone = [self._pinned(overlay) for overlay in planned
                if (overlay.name, overlay.env) not in kept]
        foreign: dict[str, Any] = {}
        if event.foreign_head:
            foreign = {"pushed_sha": event.pushed_sha, "head_pushed_by_promoter": False}
        with ExitStack() as held:
            for model, env in sorted({(o.model, o.env) for o in gone}):
                held.enter_context(self._live_version_held(
                    model, env, DeploymentStatus.DECOMMISSIONED))
            live_named = [self._untrack_collected(overlay, event.url) for overlay in gone]
            for overlay in planned:
                if (overlay.name, overlay.env) in kept and not deleted:
                    self._audit_skipped(event, overlay, reason=(
                        "the target branch still has this overlay (deployed again since, or "
                        "the merged head was not the one promoter pushed)"))
            for overlay, was_live in zip(gone, live_named, strict=True):
                row = self.ledger.decommission_collected(overlay.name, overlay.env,
                                                         overlay.model, overlay.version)
                self._audit_collected(event, overlay, removed=row is not None or was_live)
            if deleted:
                self.audit.record(
                    "gc.mr_gone", actor=event.user, iid=event.iid,
                    decommissioned=[{"name": o.name, "env": o.env, "version": o.version}
                                    for o in gone],
                    reason="the forge no longer has this merge request (deleted); what it "
                           "planned and the target branch still has stays, and `promoter gc` "
                           "proposes again what is still due")
                return
            self.audit.record(f"mr.{event.action}{'_foreign' if foreign else ''}",
                              actor=event.user or "unknown", name=event.name, env=event.env,
                              iid=event.iid, url=event.url, user=event.user,
                              head_sha=event.head_sha, **foreign)
        if event.action in SETTLING:
            # Only a merge or close ends the MR: after an approval its merge is still to come
            # (and its hook may be lost), so the MR sweep goes on following it.
            self.gc_pending.recorded(event.iid)

    def _still_on_target(self, planned: list[Overlay]) -> Collection[tuple[str, str]]:
        """(name, env) of the overlays the target branch has now (one read of it, only when
        the merge removes something)."""
        if not planned or self._target_overlays is None:
            return frozenset()
        return self._target_overlays()

    def _pinned(self, overlay: Overlay) -> Overlay:
        """``overlay`` with a version: the one it pins, else its ledger row's (while the row
        is still its model's). An overlay that pins none still ran the version promoter
        deployed there, and its merge must clear that ``live_version`` as it marks the row."""
        if overlay.version is not None:
            return overlay
        row = self.ledger.by_deployment(overlay.name, overlay.env)
        if row is None or row.model != overlay.model:
            return overlay
        return Overlay(overlay.name, overlay.env, overlay.model, row.version)

    def _audit_collected(self, event: MergeRequestEvent, overlay: Overlay, *,
                         removed: bool) -> None:
        """The per-overlay entry of a GC merge: a decommission `audit live` replays, only when
        the row or ``live_version`` still named the removed version; else ``gc.skipped``."""
        if not removed:
            self._audit_skipped(event, overlay, reason=(
                "neither the ledger nor live_version names this version any more (deployed "
                "again, or the name taken over)"))
            return
        self.audit.record("mr.merge", actor=event.user or "unknown", name=overlay.name,
                          env=overlay.env, iid=event.iid, url=event.url, model=overlay.model,
                          version=overlay.version, user=event.user, head_sha=event.head_sha,
                          status=DeploymentStatus.DECOMMISSIONED, gc=True)

    def _audit_skipped(self, event: MergeRequestEvent, overlay: Overlay, *,
                       reason: str) -> None:
        self.audit.record("gc.skipped", actor=event.user or "unknown", name=overlay.name,
                          env=overlay.env, iid=event.iid, url=event.url, model=overlay.model,
                          version=overlay.version, reason=reason)

    def _gc_removals(self, event: MergeRequestEvent, *,
                     every_proposal: bool = False) -> list[Overlay]:
        """The overlays the merged head removes: from the proposal of that MR that pushed this
        head (the newest one when the head is unknown); with ``every_proposal``, what any of
        its proposals removed, once each."""
        proposals = self._gc_proposals(event.iid)
        if every_proposal:
            chosen = proposals
        else:
            matching = [entry for entry in proposals
                        if entry.get("head_sha") == event.head_sha] or proposals
            chosen = matching[-1:]
        found = [overlay for entry in chosen for item in entry["removes"]
                 if (overlay := _overlay(item)) is not None]
        return list(dict.fromkeys(found))

    def _gc_proposals(self, iid: int) -> list[dict[str, Any]]:
        """The audited proposals (pushes) of GC's MR ``iid``, oldest first."""
        return [entry for entry in self.audit.entries()
                if entry.get("event") == PROPOSED and entry.get("iid") == iid
                and isinstance(entry.get("removes"), list)]

    def _untrack_collected(self, overlay: Overlay, url: str | None) -> bool:
        """Tag the removed version decommissioned and clear ``live_version`` if it still names
        that version (the caller holds its claim): one made live since is not removed. True
        when ``live_version`` named it."""
        if self.registry is None or overlay.version is None:
            return False
        model, version, env = overlay.model, overlay.version, overlay.env
        try:
            self.registry.write_back(model, version, env, {
                "status": DeploymentStatus.DECOMMISSIONED, "mr_url": url or ""})
            if self.registry.live_version(model, env) != version:
                return False
            self.registry.set_live_version(model, env, None)
            return True
        except PermanentError as exc:
            # GC removes overlays of models and versions deleted from MLflow: nothing to tag.
            self.audit.record("write_back.skipped", model=model, version=version, env=env,
                              reason=exc.message)
            return False
        except PromoterError as exc:
            self.audit.record("write_back.failed", model=model, version=version, env=env,
                              status=DeploymentStatus.DECOMMISSIONED, reason=exc.message)
            raise

    def _track_live(self, model: str, version: str, env: str, status: str) -> None:
        """``promoter.<env>.live_version`` on the registered model follows merges, and the
        version it replaces is tagged superseded or rolled_back."""
        assert self.registry is not None
        previous = self.registry.live_version(model, env)
        if status == DeploymentStatus.DECOMMISSIONED:
            self.registry.set_live_version(model, env, None)
            return
        # The replaced version is tagged before live_version moves: a recording that fails
        # (or is killed) in between is done again, and only while live_version still names
        # the replaced version can the retry tell which version that was.
        if previous is not None and previous != version:
            replaced = replaced_status(previous, version)
            self.registry.write_back(model, previous, env, {"status": replaced})
            self.audit.record(f"version.{replaced}", model=model, version=previous, env=env,
                              replaced_by=version)
        self.registry.set_live_version(model, env, version)


def _overlay(item: object) -> Overlay | None:
    """One overlay of a ``gc.proposed`` entry's ``removes`` (None: not one promoter wrote)."""
    if not isinstance(item, dict):
        return None
    name, env, model, version = (item.get(key) for key in ("name", "env", "model", "version"))
    if not isinstance(name, str) or not isinstance(env, str) or not isinstance(model, str):
        return None
    return Overlay(name, env, model, version if isinstance(version, str) else None)


def overlays_on_target(provider: GitProvider, root: str, target: str
                       ) -> frozenset[tuple[str, str]]:
    """(name, env) of the overlays on branch ``target`` now, from its paths alone (one tree
    listing; a directory holding only binary files counts as well)."""
    paths = provider.paths(f"{root}/", target)
    if paths is None:
        # Read as "no files", every overlay GC planned would count as removed and be marked
        # decommissioned while it may still run: the merge is recorded once it can tell.
        raise TransientError(
            f"the git remote has no target branch {target!r}: cannot tell which overlays the "
            "GC merge removed",
            hint="restore the branch (or fix git.target_branch); the MR sweep records the "
                 "merge once it can read it")
    return gc.overlay_dirs(root, paths)
