"""The `promoter gc` use case: gather what the target branch holds and what the registry says,
let the core plan the removals (core.gc), and propose them as one merge request."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from promoter.core import base_reuse, gc, mr_text
from promoter.core.gc import PROPOSED
from promoter.errors import NotFoundError, PermanentError, PromoterError, UserError
from promoter.ports.git import (
    GC_BRANCH,
    GC_KEY,
    GitProvider,
    MergeRequest,
    Proposal,
    ProposalResult,
)
from promoter.ports.registry import Registry
from promoter.service.audit import AuditTrail, since_if
from promoter.service.ledger import StateLedger
from promoter.settings import Settings
from promoter.settings_core import targets
from promoter.state.gc_pending import GcPending

__all__ = ["GC_BRANCH", "GC_KEY", "GcPlan", "collect"]
WITHDRAWN_REASON = ("promoter gc found nothing to remove any more: what this merge request "
                    "would delete is needed again (an alias points at it, or it is no longer "
                    "idle). Merging it would remove live deployments, so promoter closed it.")


FAILED_REASON = ("promoter gc could not finish proposing this merge request (its branch and "
                 "description may not match, or a promotion started meanwhile needs what it "
                 "removes), so promoter closed it; the next `promoter gc` proposes again.")


@dataclass(frozen=True)
class GcPlan:
    removals: list[gc.Removal]
    result: ProposalResult | None = None     # None for --dry-run or nothing to remove
    withdrawn: MergeRequest | None = None    # the open GC MR closed because nothing goes now


def collect(settings: Settings, registry: Registry, provider: GitProvider, *,
            dry_run: bool) -> GcPlan:
    from promoter.service import composition

    root, target = settings.git.manifests_dir.strip("/"), settings.git.target_branch
    # Every path (any file under overlays/ is an overlay a base must stay for:
    # gc.orphan_bases), but only the kustomization files' contents: on GitLab each file read
    # is a request, and a tree holds several files per overlay.
    paths = provider.paths(f"{root}/", target)
    if paths is None:
        raise UserError(f"the git remote has no branch {target!r} (git.target_branch)",
                        hint="set git.target_branch to the branch Argo CD syncs")
    files = provider.read_many(gc.kustomizations(root, paths), target)
    history = composition.audit_trail(settings)
    state = composition.state_db(settings)
    ledger, pending = StateLedger(state), GcPending(state)

    def view(overlay: gc.Overlay) -> gc.RegistryView:
        return _registry_view(settings, registry, overlay)

    idle_envs, ttl = frozenset(settings.gc.idle_environments), settings.gc.staging_ttl_seconds
    # What is live in each idle-collected environment, read once: the trail grows with every
    # promotion, and reading it per overlay made a run cost overlays x trail.
    live = {env: history.live_now(env) for env in idle_envs} if ttl is not None else {}

    def idle_since(overlay: gc.Overlay) -> float | None:
        return (since_if(live.get(overlay.env, {}).get(overlay.model), overlay.version)
                if overlay.version else None)

    found = gc.overlays(root, files)

    def wanted(name: str, model: str, leaving: frozenset[str]) -> bool:
        return _about_to_be_used(settings, registry, provider, ledger, name, model, leaving)

    orphans = [orphan for orphan in gc.orphan_bases(root, paths, files)
               if not wanted(orphan.name, orphan.model, frozenset())]
    def promoting(overlay: gc.Overlay) -> bool:
        return _promoting_into(ledger, provider, overlay)

    removals = gc.plan(root, found, view, idle_since, idle_envs, ttl, time.time(),
                       paths=paths, orphans=orphans, base_wanted=wanted, promoting=promoting)
    if dry_run:
        return GcPlan(removals)
    if not removals:
        # An open GC MR from an earlier run would still delete what is wanted again.
        return GcPlan(removals, withdrawn=provider.withdraw(GC_BRANCH, WITHDRAWN_REASON))
    try:
        result = provider.propose(_proposal(settings, removals))
        _followed(pending, history, root, found, removals, result)
        # A promotion claims the name, then looks at GC's MR; GC pushes, then looks at the
        # claims: whichever comes second sees the other, so a base (or an idle overlay) a
        # promotion claimed while this plan was made is put back (the pipeline withdraws a
        # GC MR whose marker says it removes the base it builds on or the overlay it keeps).
        spared = _claimed_since(ledger, root, removals)
        if spared:
            removals = [removal for removal in removals if removal.prefix not in spared]
            if not removals:
                return GcPlan(removals, withdrawn=provider.withdraw(GC_BRANCH,
                                                                   WITHDRAWN_REASON))
            result = provider.propose(_proposal(settings, removals))
            _followed(pending, history, root, found, removals, result)
    except PromoterError:
        # A push may have landed without its description (the marker a promotion reads), or
        # the MR may still remove a base a promotion now builds on: it must not stay open for
        # someone to merge. The withdrawal may fail too; the error is raised either way, and
        # the next `promoter gc` plans again.
        with contextlib.suppress(PromoterError):
            provider.withdraw(GC_BRANCH, FAILED_REASON)
        raise
    return GcPlan(removals, result)


def _followed(pending: GcPending, history: AuditTrail, root: str, found: list[gc.Overlay],
              removals: list[gc.Removal], result: ProposalResult) -> None:
    """Note the GC MR for the MR sweep and audit what its head removes, right after each
    push: the sweep follows every GC MR noted until its merge or close is recorded (an older
    one merged unseen included), so a `gc` stopped right after proposing cannot leave one
    nobody follows; its merge is recorded from the newest entry for its head as the
    decommission of each overlay (service.gc_outcomes), as a removal MR's merge is."""
    if result.merge_request is None:
        return
    pending.proposed(result.merge_request.iid)
    removed = {removal.prefix: removal for removal in removals}
    history.record(
        PROPOSED, iid=result.merge_request.iid, url=result.merge_request.url,
        head_sha=result.head_sha, removes=[
            {"model": o.model, "name": o.name, "env": o.env, "version": o.version,
             "untargeted": removal.untargeted}
            for o in found
            if (removal := removed.get(f"{root}/{o.name}/overlays/{o.env}/")) is not None])


def _about_to_be_used(settings: Settings, registry: Registry, provider: GitProvider,
                      ledger: StateLedger, name: str, model: str,
                      leaving: frozenset[str]) -> bool:
    """Whether the base of ``name``, whose overlays in ``leaving`` go, may be wanted by a
    promotion under way into another environment: the rule a decommission keeps its base by
    too (core.base_reuse.wanted_elsewhere)."""
    try:
        return base_reuse.wanted_elsewhere(ledger, registry, provider,
                                           targets(settings).environments, name, model,
                                           leaving)
    except PermanentError as exc:
        raise _undecided(f"whether a promotion of {model!r} is under way", exc) from None


def _promoting_into(ledger: StateLedger, provider: GitProvider, overlay: gc.Overlay) -> bool:
    """Whether a promotion into ``overlay``'s own environment is under way, which would update
    it: then it is not idle (core.base_reuse.promoting_into)."""
    try:
        return base_reuse.promoting_into(ledger, provider, overlay.name, overlay.env)
    except PermanentError as exc:
        raise _undecided(f"whether a promotion of {overlay.model!r} into {overlay.env} is "
                         "under way", exc) from None


def _claimed_since(ledger: StateLedger, root: str, removals: list[gc.Removal]) -> set[str]:
    """The removals (prefixes) a promotion claimed after the plan looked, as the ledger shows
    now: an idle overlay whose environment a proposal of its name is under way into (it
    would update the overlay), and the base of a name in use in an environment whose overlay
    this plan does not remove (an overlay spared so included)."""
    by_name: dict[str, list[gc.Removal]] = {}
    for removal in removals:
        by_name.setdefault(removal.prefix.removeprefix(f"{root}/").split("/")[0],
                           []).append(removal)
    spared: set[str] = set()
    for name, theirs in by_name.items():
        overlays = f"{root}/{name}/overlays/"
        if any(removal.idle for removal in theirs):
            proposing = ledger.proposals_under_way(name)
            spared |= {removal.prefix for removal in theirs if removal.idle
                       and removal.prefix.removeprefix(overlays).rstrip("/") in proposing}
        if f"{root}/{name}/base/" not in {removal.prefix for removal in theirs}:
            continue
        leaving = frozenset(removal.prefix.removeprefix(overlays).rstrip("/")
                            for removal in theirs
                            if removal.prefix.startswith(overlays) and removal.prefix not in spared)
        if ledger.environments_in_use(name) - leaving:
            spared.add(f"{root}/{name}/base/")
    return spared


def _registry_view(settings: Settings, registry: Registry, overlay: gc.Overlay) -> gc.RegistryView:
    model = overlay.model
    if not _exists(lambda: registry.aliases(model), f"registered model {model!r}"):
        return gc.RegistryView(model_exists=False, version_exists=False, pointed_at=None)
    version = overlay.version
    version_exists = version is None or _exists(
        lambda: registry.model_version(model, version), f"{model!r} version {version}")
    return gc.RegistryView(True, version_exists,
                           _pointed_at(settings, registry, model, overlay.env))


def _exists(read: Callable[[], object], what: str) -> bool:
    """Whether ``read()`` finds ``what`` in MLflow. Only MLflow's own "does not exist"
    (NotFoundError) says it is gone: any other refusal (a 404 of a wrong path or a proxy, a
    400) says nothing about the model, and reading it as "gone" would remove live deployments,
    so GC stops instead."""
    try:
        read()
    except NotFoundError:
        return False
    except PermanentError as exc:
        raise _undecided(f"whether {what} still exists", exc) from None
    return True


def _undecided(question: str, exc: PermanentError) -> PermanentError:
    return PermanentError(f"promoter gc stopped, removing nothing: cannot tell {question} "
                          f"({exc.message})", hint=exc.hint)


def _pointed_at(settings: Settings, registry: Registry, model: str, env: str) -> str | None:
    """The version ``env``'s trigger (alias, else stage) points ``model`` at now; None also
    for an environment no longer configured or a model MLflow no longer has (any other
    refusal stops GC: see _exists)."""
    target = targets(settings).environments.get(env)
    if target is None:
        return None
    try:
        return base_reuse.pointed_at(registry, model, target)
    except PermanentError as exc:
        raise _undecided(f"what points {model!r} at {env}", exc) from None


def _proposal(settings: Settings, removals: list[gc.Removal]) -> Proposal:
    # Directory names come from the target branch, where anyone may push: escaped too.
    lines = "\n".join(f"- {mr_text.escape(removal.prefix, 300)}: "
                      f"{mr_text.escape(removal.reason, 300)}" for removal in removals)
    overlays = sum(1 for removal in removals if "/overlays/" in removal.prefix)
    return Proposal(
        model="garbage collection", name=GC_KEY[0], env=GC_KEY[1],
        version=time.strftime("%Y%m%d", time.gmtime()),
        files={path: None for removal in removals for path in removal.files},
        managed_prefixes=tuple(removal.prefix for removal in removals),
        title=f"Garbage-collect {overlays} deployment(s) nothing needs any more",
        description=("## Garbage collection\n\npromoter found deployments in the GitOps tree "
                     f"that nothing needs any more. Merging this removes:\n\n{lines}\n\n"
                     f"{gc.removals_marker(removals)}\n"),
        labels=("promoter", "gc"), approvals_required=1,
        target_branch=settings.git.target_branch, branch_name=GC_BRANCH,
        # Only this run's removals: what an earlier run removed and is wanted again is put back.
        exact_under=(f"{settings.git.manifests_dir.strip('/')}/",))
