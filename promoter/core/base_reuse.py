"""A promotion into an environment that has no overlay yet proposes the overlay alone: the
base it renders is already on the target branch. If garbage collection's open MR removes that
base (it had no overlay left, or only ones GC collects), merging it after the promotion would
leave the new overlay pointing at a missing ../../base. The promotion claims the name before
it pushes and then looks at GC's branch; `promoter gc` pushes and then looks at the claims
(garbage._claimed_since): whichever comes second sees the other.
"""

from __future__ import annotations

from collections.abc import Iterable

from promoter.core import gc, mr_text
from promoter.ports.git import GC_BRANCH, GitProvider, MergeRequest

REASON = ("A promotion of {model} into {env} builds on the base of {name}, which this merge "
          "request removes: merged after it, the new overlay would point at a missing base. "
          "promoter closed it; `promoter gc` proposes again what is still due.")


def withdraw_gc_removing_base(provider: GitProvider, root: str, name: str,
                              base_paths: Iterable[str], *, model: str,
                              env: str) -> MergeRequest | None:
    """Close GC's open MR when it removes ``name``'s base; the MR closed, or None. GC's
    branch lacking a base file (``base_paths``, relative to ``root``, as on the target branch)
    is not proof: that branch is the target branch as the last `promoter gc` found it, so a
    base created since is missing there too. Only then is the MR read, and its marker
    (gc.removals_marker), when it has one, must name the base. One listing of GC's branch in
    the common case."""
    prefix = f"{root}/{name}/base/"
    on_gc = provider.paths(prefix, GC_BRANCH)
    if on_gc is None or {f"{root}/{path}" for path in base_paths} <= on_gc:
        return None
    collecting = provider.open_merge_request(GC_BRANCH)
    if collecting is None:
        return None
    marked = gc.marked_removals(collecting.description)
    if marked is not None and prefix not in marked:
        return None   # GC's branch predates the base: it does not remove it
    # Marked, or no marker to read (an MR from before markers, an edited description): the
    # branch lacking the base is all there is to go on, and a needless withdrawal only delays
    # GC, where a kept one could break the new overlay.
    # The model's name is the user's text: escaped, as everywhere in MR text.
    return provider.withdraw(GC_BRANCH, REASON.format(model=mr_text.escape(model, 120),
                                                      env=env, name=name))
