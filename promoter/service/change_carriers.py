"""Which Argo CD revisions carry a deployment's merged change, asked of the git provider.

Both readers of cluster status need the one answer: the clusters' feedback, to judge an
environment ``deployed`` (service.cluster_feedback), and `promoter status`, to show a version
only for a cluster whose revision contains the merge that made it live. A revision carries
the change when the commit the MR's merge landed (``MergeRequest.landed_commit``), or the head
promoter pushed for the MR when the forge cannot name that, is the revision or an ancestor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from promoter.core.cluster_status import Carries
from promoter.errors import NotFoundError
from promoter.ports.git import MergeRequest
from promoter.ports.pipeline import DeployedState


class AncestryView(Protocol):
    def is_ancestor(self, commit: str, revision: str) -> bool:
        """True when ``revision`` contains ``commit`` (ports.forge.Forge.is_ancestor)."""


class MergeRequests(Protocol):
    def get(self, iid: int) -> MergeRequest: ...


class Unanswered(Exception):
    """A revision nobody asked the git provider about yet (for the feedback: stored meanwhile
    by a concurrent observation): ask (``ChangeCarriers.learn``), then judge again."""

    def __init__(self, revision: str) -> None:
        super().__init__(revision)
        self.revision = revision


class ChangeCarriers:
    """Which revisions contain the merged change, asked of the git provider ahead of judging
    (the feedback judges inside a state-database transaction, which a GitLab call must not
    hold open)."""

    def __init__(self, commit: str, forge: AncestryView | None) -> None:
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
            raise Unanswered(revision)
        return self.known[revision]


def never(revision: str) -> bool:
    # The MR is not merged, or promoter has not recorded its verified merge: no revision
    # carries a change promoter can vouch for yet.
    return False


def unnamed(revision: str) -> bool:
    # Merged, but promoter cannot name a commit that carries it: never judged deployed either,
    # and a `deployed` told before is not taken back for that alone, only when the clusters
    # moved off the revision it was told at (cluster_feedback._status_tags).
    return False


def change_carriers(deployed: DeployedState, merge_requests: MergeRequests | None,
                    forge: AncestryView | None) -> ChangeCarriers | Carries | None:
    """Whether a revision contains ``deployed``'s merged MR: the commit its merge landed
    (merge commit, squash commit, or head for a fast-forward: MergeRequest.landed_commit)
    is that revision or an ancestor of it; never while the MR is not merged.

    When the forge cannot name that commit (the MR is gone, no MR is known, it has no
    head), the head promoter pushed for the MR (the ledger row's ``head_sha``; verified as
    the merged head, or the row would be merged_unverified) stands in: a merge commit or a
    fast-forward contains it (a squash does not: not carried, the safe side). Without
    it either: never (``unnamed``). Agreeing clusters are no evidence: a cluster that never
    synced the merge agrees on the pre-merge HEAD, which runs the previous version. None
    only when no git provider is wired at all (``merge_requests`` None)."""
    if merge_requests is None:
        return None
    commit = deployed.head_sha
    if deployed.mr_iid is not None:
        try:
            mr = merge_requests.get(deployed.mr_iid)
        except NotFoundError:   # the MR is gone (deleted, other provider)
            mr = None
        if mr is not None and mr.state != "merged":
            return never
        if mr is not None and mr.landed_commit:
            commit = mr.landed_commit
    return ChangeCarriers(commit, forge) if commit else unnamed
