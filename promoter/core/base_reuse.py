"""A promotion into an environment that has no overlay yet proposes the overlay alone: the
base it renders is already on the target branch. If garbage collection's open MR removes that
base (it had no overlay left, or only ones GC collects), merging it after the promotion would
leave the new overlay pointing at a missing ../../base. The promotion claims the name before
it pushes and then looks at GC's branch; `promoter gc` pushes and then looks at the claims
(garbage._claimed_since): whichever comes second sees the other. Likewise a promotion into an
environment whose overlay GC's open MR removes (planned while nothing pointed there) closes
that MR: merged, it would take down what the promotion keeps.

Whether a base may be wanted by a promotion under way into another environment is one rule
(``wanted_elsewhere``), used by `promoter gc` and by a decommission removing its last overlay.
Whether a promotion into an overlay's own environment is under way (``promoting_into``: it
would update the overlay, so GC must not find it idle) reads the same signs for that one
environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from promoter.core import gc, mr_text
from promoter.core.config import EnvironmentTarget
from promoter.errors import NotFoundError
from promoter.ports.git import GC_BRANCH, GitProvider, MergeRequest, branch_for
from promoter.ports.pipeline import DeploymentLedger
from promoter.ports.registry import Registry

REASON = ("A promotion of {model} into {env} builds on the base of {name}, which this merge "
          "request removes: merged after it, the new overlay would point at a missing base. "
          "promoter closed it; `promoter gc` proposes again what is still due.")
OVERLAY_REASON = ("{env} points {model} at a version again, and its promotion keeps the "
                  "overlay of {name} in {env}, which this merge request removes: merged, it "
                  "would take down what {env} runs. promoter closed it; `promoter gc` "
                  "proposes again what is still due.")


def withdraw_gc_removing_base(provider: GitProvider, root: str, name: str,
                              base_paths: Iterable[str], *, model: str,
                              env: str) -> MergeRequest | None:
    """Close GC's open MR when it removes ``name``'s base; the MR closed, or None."""
    # The model's name is the user's text: escaped, as everywhere in MR text.
    return _withdraw_gc_removing(
        provider, f"{root}/{name}/base/", {f"{root}/{path}" for path in base_paths},
        REASON.format(model=mr_text.escape(model, 120), env=env, name=name))


def withdraw_gc_removing_overlay(provider: GitProvider, root: str, name: str, *, model: str,
                                 env: str) -> MergeRequest | None:
    """Close GC's open MR when it removes the overlay of ``env``, which the target branch has
    and a promotion into ``env`` keeps (GC planned it while nothing pointed there; the
    trigger points at the model again). Merged, it would take down what the environment runs
    while its promotion found nothing to change; withdrawn, `promoter gc` plans again."""
    prefix = f"{root}/{name}/overlays/{env}/"
    return _withdraw_gc_removing(
        provider, prefix, {f"{prefix}kustomization.yaml"},
        OVERLAY_REASON.format(model=mr_text.escape(model, 120), env=env, name=name))


def _withdraw_gc_removing(provider: GitProvider, prefix: str, on_target: set[str],
                          reason: str) -> MergeRequest | None:
    """Close GC's open MR when it removes the directory ``prefix``, whose files
    ``on_target`` (paths from the repository root) the target branch has. GC's branch
    lacking one of them is not proof: that branch is the target branch as the last
    `promoter gc` found it, so a file created since is missing there too. Only then is the MR
    read, and its marker (gc.removals_marker), when it has one, must name the directory. One
    listing of GC's branch in the common case."""
    on_gc = provider.paths(prefix, GC_BRANCH)
    if on_gc is None or on_target <= on_gc:
        return None
    collecting = provider.open_merge_request(GC_BRANCH)
    if collecting is None:
        return None
    marked = gc.marked_removals(collecting.description)
    if marked is not None and prefix not in marked:
        return None   # GC's branch predates the directory: it does not remove it
    # Marked, or no marker to read (an MR from before markers, an edited description): the
    # branch lacking the directory is all there is to go on, and a needless withdrawal only
    # delays GC, where a kept one could break what the promotion keeps.
    return provider.withdraw(GC_BRANCH, reason)


def wanted_elsewhere(ledger: DeploymentLedger, registry: Registry, provider: GitProvider,
                     environments: Mapping[str, EnvironmentTarget], name: str, model: str,
                     leaving: frozenset[str]) -> bool:
    """Whether the base of ``name``, whose overlays in ``leaving`` go (none left: an orphan,
    ``leaving`` empty), may be wanted by a promotion under way into another environment. That
    environment's first promotion proposes its overlay alone (the base on the target branch
    is already what it renders), so an MR removing the base, merged after that proposal,
    would leave its overlay pointing at a missing ../../base. Checked cheapest first: the
    ledger (a proposal claims the name and its environment before it pushes; a deployment
    whose MR is open or merged), then the registry (an alias or stage set now, its job perhaps
    still queued: one MLflow read per environment), then the forge (an open promotion MR,
    whatever state database opened it)."""
    if ledger.environments_in_use(name) - leaving:
        return True
    others = [target for target in environments.values() if target.name not in leaving]
    if any(pointed_at(registry, model, target) is not None for target in others):
        return True
    return _promotion_mr_open(provider, name, (target.name for target in others))


def promoting_into(ledger: DeploymentLedger, provider: GitProvider, name: str,
                   env: str) -> bool:
    """Whether a promotion of ``name`` into ``env`` itself is under way: it updates ``env``'s
    overlay, so GC must not remove that overlay as idle (merged first, GC's MR would leave the
    promotion's conflicting with the target branch, and ``env`` without an overlay while its
    trigger names a version). The signs wanted_elsewhere reads, for this one environment and
    cheapest first: the ledger (a claim of ``env`` in flight, or ``env``'s row naming an open
    MR; a row merely merged there is no promotion), then the forge (an open MR of its
    promote/<name>/<env> branch, whatever state database opened it). The trigger, the third
    sign, the caller has read already: GC keeps an overlay whose alias (or stage) names
    another version than it pins (core.gc), a promotion whose job may still be queued."""
    return (env in ledger.proposals_under_way(name)
            or _promotion_mr_open(provider, name, (env,)))


def _promotion_mr_open(provider: GitProvider, name: str, environments: Iterable[str]) -> bool:
    """Whether an MR of ``name``'s promotion branch into any of ``environments`` is open."""
    return any(provider.open_merge_request(branch_for(name, env)) is not None
               for env in environments)


def pointed_at(registry: Registry, model: str, target: EnvironmentTarget) -> str | None:
    """The version ``target``'s alias (else stage) points ``model`` at now. A registered model
    MLflow no longer has points nowhere; any other refusal is raised (it says nothing about
    the model, and reading it as "nowhere" would remove what runs)."""
    try:
        return registry.current_version(model, target.alias, target.stage)
    except NotFoundError:
        return None
