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

A reopen is audited (``mr.reopen``) and undoes a recorded close of the MR the row follows: the
row and the version's tag wait on the MR again (``decommissioning`` for a removal MR), and the
MR's next close is recorded anew. A merge of the reopened MR is recorded after the reopen, never
undone by it (OutcomeClaims.reopening).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from promoter.core.live_history import FOREIGN_MERGED, MERGED
from promoter.core.mr_events import (
    REOPEN,
    SETTLING,
    ForgeEvent,
    MergeRequestEvent,
    PipelineEvent,
    approval_status,
    reopened_status,
)
from promoter.core.mr_text import FOREIGN_HEAD_NOTE, foreign_head_text
from promoter.core.results import DeploymentStatus, replaced_status
from promoter.errors import NotFoundError, PromoterError
from promoter.ports.forge import Forge
from promoter.ports.git import GC_KEY
from promoter.ports.pipeline import DeployedState
from promoter.ports.registry import Registry
from promoter.service.audit import AuditTrail
from promoter.service.gc_outcomes import GcOutcomes
from promoter.service.ledger import StateLedger
from promoter.service.logs import log
from promoter.service.outcome_claims import OutcomeClaims
from promoter.state.closed_removals import ClosedRemovals
from promoter.state.left_mrs import LeftMrs
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
                 points_at: Callable[[str, str], str | None] | None = None,
                 after_merge: Callable[[str, str], None] | None = None) -> None:
        self.registry = registry
        self.ledger = ledger
        self.audit = audit
        self.heads = heads
        self.claims = claims or OutcomeClaims(ledger.db)
        # Where notes go (built when first needed: only a foreign merge writes one).
        self._forge = forge
        # MRs ledger rows left before their outcome was recorded (the MR sweep follows them).
        self.left = LeftMrs(ledger.db)
        # Removal MRs whose close is recorded: their reopen puts them back to decommissioning.
        self.closed_removals = ClosedRemovals(ledger.db)
        # Garbage collection's MRs (service.gc_outcomes), under the same outcome claims.
        self.gc = GcOutcomes(registry, ledger, audit, self.claims, target_overlays, points_at)
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
        if event.action == REOPEN:
            (self.gc.reopened if (event.name, event.env) == GC_KEY else self._reopened)(event)
            return
        # A GC merge request's merge decommissions what it removes: recorded twice (two
        # deliveries of its hook without one Idempotency-Key), a later run would mark a
        # version deployed again since as decommissioned and clear its live_version.
        record = self.gc.record if (event.name, event.env) == GC_KEY else self._record
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
                    self.gc.pending.recorded(event.iid)
        if (event.name, event.env) != GC_KEY:
            # An MR a row left, recorded by its (late) hook: the sweep need not follow it.
            self.left.settled(event.project_id, event.iid)
            if event.action == "merge":   # merged, it is reopened no more
                self.closed_removals.forget(event.project_id, event.iid)

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
        # The same iid in another project (git.project changed) is another MR.
        if state is not None and (state.mr_iid is None or (
                state.mr_iid == event.iid and state.mr_project in (None, event.project_id))):
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
        if not current and not event.foreign_head and \
                self.left.is_removal(event.project_id, event.iid):
            # A removal MR the row left (state.left_mrs): its merge decommissioned the
            # environment; its approval or close changes nothing.
            status = DeploymentStatus.DECOMMISSIONED if status == DeploymentStatus.MERGED \
                else None
        if current and state is not None and state.status == DeploymentStatus.CLOSED and \
                status == DeploymentStatus.MERGED and \
                self.closed_removals.is_removal(event.project_id, event.iid):
            # A removal MR closed, then reopened with its hook lost (the row still says
            # closed), then merged: it removed the environment, it deployed nothing.
            status = DeploymentStatus.DECOMMISSIONED
        late: dict[str, Any] = {}
        if status in LIVE_MOVING and not current and version is not None:
            replaced, newer = self._merged_after(event)
            if replaced:
                late = {"late": True}   # core.live_history: it made nothing live
                # An older MR's merge (a promotion's or a removal's) found late (its hook
                # lost; the MR sweep follows MRs a row left): a later MR's merge recorded
                # since replaced it, so it must neither make its version live again nor
                # remove the newer one, nor tag that one as replaced. Merged again since (the
                # same version), it is live already: audited only.
                status = replaced_status(version, newer) if newer and newer != version \
                    else None
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
                              **unattributed, **late)
            if status is None or model is None or version is None:
                return
            if self.registry is not None:
                self._write_back(model, version, event.env, event.url, status)
        # Last: the ledger's status is what the reconcile sweep waits on, so it moves only
        # once MLflow has the outcome too; and only if the row still names this MR (a newer
        # promotion may have put it during the calls above: that row is not ours to settle).
        if current and state is not None:
            if state.status == DeploymentStatus.DECOMMISSIONING and \
                    status == DeploymentStatus.CLOSED:
                # Before the row forgets it removes.
                self.closed_removals.closed(event.project_id, event.iid, event.name, event.env)
            self.ledger.settle(state, status)
            if status == DeploymentStatus.MERGED and self._after_merge is not None:
                self._deployed_already(event.name, event.env)

    def _reopened(self, event: MergeRequestEvent) -> None:
        """A reopen of promoter's MR, audited as ``mr.reopen``. A close recorded for the MR
        the row follows is undone (core.mr_events.reopened_status) on the version's tag,
        then on the row, which the MR sweep follows again; the close's claim is forgotten, so
        the MR's next close is recorded, not taken for the first (OutcomeClaims.reopening).
        An older MR the row left is audited only.

        MLflow first, the audit after, the row last (as GcOutcomes.record): a write-back that
        fails leaves nothing written, and the retry (GitLab's re-delivery) audits the reopen
        once. The row goes back only while it still says ``closed`` (an approval recorded
        meanwhile stands); a merge of the MR waits for the reopen (its claim is held), so it
        is recorded after it, on the tag and on the row."""
        assert event.name is not None and event.env is not None
        with self.claims.reopening(event):
            state, current, version, model = self._subject(event)
            status = reopened_status(state.status if current and state is not None else None,
                                     removal=self.closed_removals.is_removal(event.project_id,
                                                                             event.iid))
            known = model is not None and version is not None
            if status is not None and known and self.registry is not None:
                assert model is not None and version is not None
                self._write_back(model, version, event.env, event.url, status)
            unattributed: dict[str, Any] = {} if known else {"unattributed": True}
            self.audit.record("mr.reopen", actor=event.user or "unknown", name=event.name,
                              env=event.env, iid=event.iid, url=event.url, user=event.user,
                              head_sha=event.head_sha, model=model if known else None,
                              version=version if known else None,
                              status=status if known else None, **unattributed)
            if status is None or not known:
                return
            if current and state is not None and \
                    not self.ledger.settle(state, status, if_unchanged=True):
                self._restate_tag(state, event.url)
            self.closed_removals.forget(event.project_id, event.iid)

    def _restate_tag(self, read: DeployedState, url: str) -> None:
        """The reopen's row update found the row changed since it was ``read``: an outcome
        recorded meanwhile (an approval) wrote its status to the row, and to the tag before
        the reopen's ``mr_opened`` may have landed on it. The row, which the other outcome
        settled last, is written to the tag again, so the two agree. (A merge cannot be the
        other outcome: it waits for the reopen, OutcomeClaims.reopening.)"""
        now = self.ledger.by_deployment(read.name, read.env)
        if now is None or (now.mr_iid, now.version, now.model) != \
                (read.mr_iid, read.version, read.model) or self.registry is None:
            return   # the row moved on to another MR: that MR's outcomes write its tag
        if now.status not in LIVE_MOVING:   # never moves live_version: that is a merge's
            self._write_back(now.model, now.version, read.env, url, now.status)

    def _merged_after(self, event: MergeRequestEvent) -> tuple[bool, str | None]:
        """Whether a merge of a later MR of ``event``'s deployment is recorded (MR iids grow
        with time, and a branch has one MR open at a time), and the version of the first such
        merge, the one that replaced it. Read from the audit trail: the ledger row may have
        moved on again since. Verified entries only (AuditTrail.verified): a later merge
        appended by hand must not make a real merge count as replaced."""
        later = self.audit.verified(lambda entries: [
            entry for entry in entries
            if entry.get("event") in (MERGED, FOREIGN_MERGED)
            and entry.get("name") == event.name and entry.get("env") == event.env
            and isinstance(entry.get("iid"), int) and entry["iid"] > event.iid])
        if not later:
            return False, None
        # The merge that replaced it: the next MR's, not the one recorded last (another late
        # one may have been recorded after it).
        version = min(later, key=lambda entry: int(entry["iid"])).get("version")
        return True, version if isinstance(version, str) else None

    def _deployed_already(self, name: str, env: str) -> None:
        """The merge is recorded in full; a failure to judge Argo CD's status again is not
        the merge's: logged, and the next observation tells it."""
        assert self._after_merge is not None
        try:
            self._after_merge(name, env)
        except PromoterError as exc:
            log(_log, logging.WARNING, "Argo CD status not judged again after the merge; the "
                "next observation tells it", name=name, env=env, error=exc.message)

    def _status(self, event: MergeRequestEvent, current: DeployedState | None) -> str | None:
        """What the outcome makes of the version (None: nothing, e.g. one of several
        approvals of a removal MR)."""
        if event.foreign_head:
            return FOREIGN_STATUS_FOR_ACTION[event.action]
        if event.action == "approved":   # an older MR's (``current`` None) tags nothing
            return approval_status(current.status if current else None,
                                   lambda: self._open_now(event))
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

    def _open_now(self, event: MergeRequestEvent) -> bool:
        """Whether ``event``'s MR is open on the forge now (False without a forge)."""
        forge = self._forge() if self._forge is not None else None
        return forge is not None and any(
            mr.iid == event.iid and mr.state == "opened"
            for mr in forge.merge_requests(event.source_branch))

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
        """The outcome on the version's tags, and live_version moved. A version deleted from
        MLflow has no tags to set, but its model's live_version still follows the outcome; a
        model deleted (a removal MR of a deleted model) has neither (audited, skipped:
        raising would leave the outcome unrecorded, retried for good). Any other failure is
        raised: the hook handler releases the delivery (a re-delivery acts again), the
        reconcile sweep looks again next pass, and `promoter mr` says so."""
        assert self.registry is not None
        try:
            with self.audit.writing_back(model, version, env, status=status):
                try:
                    self.registry.write_back(model, version, env,
                                             {"status": status, "mr_url": url})
                except NotFoundError as exc:   # the version alone may be gone: go on
                    self.audit.write_back_skipped(exc, model, version, env, status=status)
                if status in LIVE_MOVING:
                    self._track_live(model, version, env, status)
        except PromoterError as exc:
            log(_log, logging.WARNING, "could not write the MR outcome back to MLflow",
                model=model, version=version, env=env, reason=exc.message)
            raise

    def _track_live(self, model: str, version: str, env: str, status: str) -> None:
        """``promoter.<env>.live_version`` on the registered model follows merges, and the
        version it replaces is tagged superseded or rolled_back."""
        assert self.registry is not None
        if status == DeploymentStatus.DECOMMISSIONED:
            # Cleared without reading it first: the model may be gone from MLflow, and
            # clearing a tag that is not there changes nothing.
            self.registry.set_live_version(model, env, None)
            return
        previous = self.registry.live_version(model, env)
        # The replaced version is tagged before live_version moves: a recording that fails
        # (or is killed) in between is done again, and only while live_version still names
        # the replaced version can the retry tell which version that was.
        if previous is not None and previous != version:
            replaced = replaced_status(previous, version)
            self.registry.write_back(model, previous, env, {"status": replaced})
            self.audit.record(f"version.{replaced}", model=model, version=previous, env=env,
                              replaced_by=version)
        self.registry.set_live_version(model, env, version)


