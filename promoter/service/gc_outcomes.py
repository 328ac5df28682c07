"""Garbage collection's merge requests flow back: what a GC merge removed is decommissioned.

GC's MR has no ledger row of its own. Its merge removes overlays, so it counts as the
decommission of each (ledger row, ``live_version``, the audit entry `audit live` replays), as
a removal MR's merge does; which overlays it removed is read from the audited proposal of the
merged head and checked against the target branch (what the branch still has stays) and
against the registry (an overlay whose environment points at the model again is wanted: no
decommission is recorded, and its promotion puts it back). A GC MR
deleted on the forge is recorded the same way from what its proposals planned. Called by
``MergeRequestOutcomes`` (the webhook's, the sweep's and `promoter mr`'s handler), under the
outcome claims it shares with every other MR.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

from promoter.core import gc
from promoter.core.gc import PROPOSED, Overlay
from promoter.core.mr_events import SETTLING, MergeRequestEvent
from promoter.core.results import DeploymentStatus
from promoter.errors import TransientError
from promoter.ports.git import GC_BRANCH, GC_KEY, GitProvider
from promoter.ports.registry import Registry
from promoter.service.audit import AuditTrail
from promoter.service.ledger import StateLedger
from promoter.service.outcome_claims import OutcomeClaims
from promoter.state.gc_pending import GcPending


class GcOutcomes:
    def __init__(self, registry: Registry | None, ledger: StateLedger, audit: AuditTrail,
                 claims: OutcomeClaims,
                 target_overlays: Callable[[], Collection[tuple[str, str]]] | None,
                 points_at: Callable[[str, str], str | None] | None = None) -> None:
        self.registry = registry
        self.ledger = ledger
        self.audit = audit
        self.claims = claims
        # (name, env) of the overlays on the target branch now, read when a GC merge is
        # recorded; None (no branch to read): what GC planned counts as removed.
        self._target_overlays = target_overlays
        # The version an environment's trigger (alias, else stage) points a model at now
        # (model, env); None: nothing to ask (no configured environments).
        self._points_at = points_at
        # GC MRs whose outcome is not recorded yet (state.gc_pending): removed last.
        self.pending = GcPending(ledger.db)

    def gone(self, project_id: int, iid: int) -> None:
        """GC's MR ``iid``, noted as unrecorded, is not on the forge any more (an owner
        deleted it): the sweep stops following it. Unmerged, it removed nothing; merged while
        its hook was lost, it did. The target branch tells which: every overlay any of its
        proposals planned that the branch no longer has is decommissioned as the merge would
        have done it, the rest left as they are. Claimed as its merge (a merge recorded
        already, or recorded later, is not recorded twice); audited as ``gc.mr_gone``; the
        note goes last."""
        proposals = self._proposals(iid)
        url = str(proposals[-1].get("url") or "") if proposals else ""
        event = MergeRequestEvent(
            action="merge", project_id=project_id, project_path="", iid=iid, state="deleted",
            source_branch=GC_BRANCH, target_branch="", head_sha=None, url=url,
            user="reconcile", name=GC_KEY[0], env=GC_KEY[1])
        with self.claims.outcome(event) as ours:
            if ours:
                self.record(event, deleted=True)
        self.pending.recorded(iid)

    def reopened(self, event: MergeRequestEvent) -> None:
        """GC's MR reopened: audited as ``mr.reopen`` and followed by the MR sweep again (its
        recorded close ended that), so its merge is recorded, as the decommission it is, even
        if its hook is lost; its next close is recorded too (OutcomeClaims.reopening)."""
        with self.claims.reopening(event):
            self.audit.record("mr.reopen", actor=event.user or "unknown", name=event.name,
                              env=event.env, iid=event.iid, url=event.url, user=event.user,
                              head_sha=event.head_sha)
            self.pending.proposed(event.iid)

    def record(self, event: MergeRequestEvent, *, deleted: bool = False) -> None:
        """A GC merge request's outcome. Its merge removes overlays, so it counts as the
        decommission of each (as a removal MR's merge does): `audit live`, the ledger and
        ``live_version`` must not go on naming a version the target branch no longer runs.

        The MR was planned earlier and its merge may be recorded late (a re-delivery after a
        failed write-back, the MR sweep), and its head may not be promoter's
        (``event.foreign_head``): only an overlay the target branch no longer has is
        decommissioned; one it still has (deployed again since, or kept by someone's head)
        is audited as ``gc.skipped``, and so is one whose environment's trigger points at the
        model again (``points_at``: the alias set back while the MR waited; its promotion puts
        the overlay back). Each overlay's ledger row and ``live_version`` change
        only while they still name the model and version it removed. Every ``live_version``
        claim is taken and every MLflow call made before the audit trail is written, so a busy
        claim or an MLflow failure leaves no audit entry for the retry to write again. The
        GC-level entry comes after the per-overlay work and the unrecorded note goes last: a
        recording cut short is done again by the MR sweep (recorded possibly twice, never
        zero times)."""
        # Deleted: which head merged, if any, is unknown; every proposal's plan is checked
        # against the target branch (what it still has stays).
        planned, untargeted = self._removals(event, every_proposal=deleted) \
            if event.action == "merge" else ([], frozenset())
        kept = self._still_on_target(planned)
        removed = [self._pinned(overlay) for overlay in planned
                   if (overlay.name, overlay.env) not in kept]
        wanted = self._wanted_again([overlay for overlay in removed
                                     if (overlay.name, overlay.env) in untargeted])
        gone = [overlay for overlay in removed if overlay not in wanted]
        foreign: dict[str, Any] = {}
        if event.foreign_head:
            foreign = {"pushed_sha": event.pushed_sha, "head_pushed_by_promoter": False}
        with ExitStack() as held:
            for model, env in sorted({(o.model, o.env) for o in gone}):
                held.enter_context(self._live_version_held(model, env))
            live_named = [self._untrack_collected(overlay, event.url) for overlay in gone]
            for overlay in planned:
                if (overlay.name, overlay.env) in kept and not deleted:
                    self._audit_skipped(event, overlay, reason=(
                        "the target branch still has this overlay (deployed again since, or "
                        "the merged head was not the one promoter pushed)"))
            for overlay, version in wanted.items():
                self._audit_skipped(event, overlay, reason=(
                    f"{overlay.env} points the model at version {version} again: its "
                    "promotion puts the overlay back, so this is no decommission"))
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
            self.pending.recorded(event.iid)

    def _wanted_again(self, removed: list[Overlay]) -> dict[Overlay, str]:
        """Of overlays GC removed because nothing pointed at them (``removed``), those whose
        environment's trigger points at their model again (the alias set back while GC's MR
        waited), with the version it points at. (One removed while its trigger pointed there,
        idle past its TTL or its version gone, is a decommission whatever the alias says.)
        Recorded as a
        decommission, the ledger, ``live_version`` and `audit live` would say the environment
        runs nothing while its alias names a version; left as they are, its promotion (or
        the reconcile loop) puts the overlay back. One MLflow read per removed overlay."""
        if self._points_at is None:
            return {}
        wanted = {}
        for overlay in removed:
            version = self._points_at(overlay.model, overlay.env)
            if version is not None:
                wanted[overlay] = version
        return wanted

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

    def _removals(self, event: MergeRequestEvent, *, every_proposal: bool = False
                  ) -> tuple[list[Overlay], frozenset[tuple[str, str]]]:
        """The overlays the merged head removes: from the proposal of that MR that pushed this
        head (the newest one when the head is unknown); with ``every_proposal``, what any of
        its proposals removed, once each. Also (name, env) of those GC planned because no
        trigger pointed at them (entries written before that was noted: none)."""
        proposals = self._proposals(event.iid)
        if every_proposal:
            chosen = proposals
        else:
            matching = [entry for entry in proposals
                        if entry.get("head_sha") == event.head_sha] or proposals
            chosen = matching[-1:]
        found: dict[Overlay, None] = {}
        untargeted: set[tuple[str, str]] = set()
        for item in (item for entry in chosen for item in entry["removes"]):
            if (overlay := _overlay(item)) is not None:
                found[overlay] = None
                if item.get("untargeted") is True:
                    untargeted.add((overlay.name, overlay.env))
        return list(found), frozenset(untargeted)

    def _proposals(self, iid: int) -> list[dict[str, Any]]:
        """The audited proposals (pushes) of GC's MR ``iid``, oldest first. Verified entries
        only (AuditTrail.verified): a proposal appended by hand must not name overlays for
        the merge to decommission."""
        return self.audit.verified(lambda entries: [
            entry for entry in entries
            if entry.get("event") == PROPOSED and entry.get("iid") == iid
            and isinstance(entry.get("removes"), list)])

    def _untrack_collected(self, overlay: Overlay, url: str | None) -> bool:
        """Tag the removed version decommissioned and clear ``live_version`` if it still names
        that version (the caller holds its claim): one made live since is not removed. True
        when ``live_version`` named it."""
        if self.registry is None or overlay.version is None:
            return False
        model, version, env = overlay.model, overlay.version, overlay.env
        # GC removes overlays of models and versions deleted from MLflow: nothing to tag.
        # Only MLflow's "does not exist" says so; any other refusal fails the recording.
        with self.audit.writing_back(model, version, env,
                                     status=DeploymentStatus.DECOMMISSIONED):
            self.registry.write_back(model, version, env, {
                "status": DeploymentStatus.DECOMMISSIONED, "mr_url": url or ""})
            if self.registry.live_version(model, env) != version:
                return False
            self.registry.set_live_version(model, env, None)
            return True
        return False

    def _live_version_held(self, model: str, env: str) -> AbstractContextManager[None]:
        """The (model, env) live_version claim a decommission moves (none without MLflow)."""
        return nullcontext() if self.registry is None else self.claims.live_version(model, env)


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
