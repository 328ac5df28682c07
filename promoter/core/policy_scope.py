"""What the CI gate's policy job must judge in a merge request's tree. Pure.

Two questions, both over repository paths:

- which overlays a change can affect (``overlays_to_check``): every overlay that reaches the
  changed path, whatever model directory it is in (``components: [../../../other-model/gpu]``
  in one model's overlay makes a change to another model's directory change what it deploys);
  and, as a floor that does not depend on that walk, an overlay's own files at any depth
  (``overlays/<env>/patches/gpu.yaml``) select that overlay, any other file of a model
  directory (its ``base/``) selects every overlay of that model, and anything else under the
  manifests tree (a shared component, a root kustomization, a deleted model) selects them all;
- whether a team's deployments together exceed its GPU quota in one environment
  (``team_quota_totals``). One overlay at a time can never see that sum; the CI job sees the
  whole tree the merge request would leave on the target branch, so it sums every overlay.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from promoter.core.policy import GpuShare, RuleResult, team_gpu_quota


def overlays_to_check(changed: Iterable[str], overlays: Iterable[str], tree: str,
                      reached: Mapping[str, Collection[str]] | None = None) -> list[str]:
    """The overlays (``<tree>/<model>/overlays/<env>``) that the changed paths can affect;
    paths outside ``tree`` affect none, since the gate denies an overlay that reads any
    (gitops.references). ``reached``: overlay → the directories and paths its kustomizations
    reach (gitops.references.reached_paths, of the tree the merge request leaves); a changed
    path at or under one of them, or above one (a symbolic link on the way, a file replaced by
    a directory), selects the overlay. A deleted file therefore counts when the overlay still
    reaches its directory, or still names it (the build then fails, which the gate denies).
    '/'-separated paths, all absolute or all relative to one place, without trailing
    slashes."""
    every = sorted(set(overlays))
    reach = reached or {}
    by_model: dict[str, list[str]] = {}
    for overlay in every:
        by_model.setdefault(overlay.rsplit("/", 2)[0], []).append(overlay)
    selected: set[str] = set()
    for path in changed:
        if not _under(path, tree):
            continue
        # The walk's answer: every overlay, of any model, reading what the path changed.
        selected.update(overlay for overlay in every
                        if any(_under(path, r) or _under(r, path) for r in reach.get(overlay, ())))
        # The floor by layout, kept because the walk sees only the fields kustomize_refs lists
        # (a transformer's config may name a file of its own): it never selects fewer than
        # before the walk existed.
        own = [overlay for overlay in every if _under(path, overlay)]
        model = next((m for m in by_model if _under(path, m)), None)
        if own:
            selected.update(own)
        elif model is not None:
            selected.update(by_model[model])
        else:
            return every   # shared by, or reachable from, any overlay: judge them all
    return sorted(selected)


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@dataclass(frozen=True)
class GpuClaim:
    """What one overlay claims: GPUs x maxReplicas of ``team`` in ``env``."""

    overlay: str
    team: str
    env: str
    gpus: int


def team_quota_totals(claims: Sequence[GpuClaim], quotas: Mapping[str, int],
                      default: int | None) -> dict[tuple[str, str], RuleResult]:
    """(team, env) → the team GPU quota verdict (core.policy.team_gpu_quota) on the sum of its
    overlays' claims; teams without a quota (and no default) get none."""
    groups: dict[tuple[str, str], list[GpuClaim]] = {}
    for claim in claims:
        groups.setdefault((claim.team, claim.env), []).append(claim)
    results: dict[tuple[str, str], RuleResult] = {}
    for (team, env), members in sorted(groups.items()):
        shares = [GpuShare(claim.overlay, claim.gpus)
                  for claim in sorted(members, key=lambda c: c.overlay)]
        judged = team_gpu_quota(team, env, shares, quotas, default)
        if judged is not None:
            results[(team, env)] = judged
    return results
