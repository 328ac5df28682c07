"""The MR sweep's decisions: which deployments wait on a merge request, and which event a
settled merge request stands for.

A merge or close reaches promoter through GitLab's Merge Request Hook (or, with the local
provider, from `promoter mr`). GitLab does not reliably re-deliver a failed hook — it disables
a failing one — and promoter may be down when a reviewer merges, so a lost outcome would never
reach the ledger, the audit or MLflow. The reconcile loop therefore asks the forge about the MRs
the ledger still waits on and, when one is merged or closed, synthesizes the event the hook
would have carried. The guards are the webhook's: promoter's own head, on the target branch;
an MR settled there with someone else's head is synthesized as the webhook passes it on, a
foreign outcome (``MergeRequestEvent.pushed_sha`` set), recorded but not acted on as promoter's.

Garbage collection's MRs have no ledger row: the sweep follows the ones whose outcome is not
recorded yet (state.gc_pending), oldest first, ``GC_LIMIT`` a pass; so it does for the MRs a
row moved on from before their outcome was recorded (state.left_mrs). Only MRs of the
configured project are read (of_project): an iid names another MR in another project.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from promoter.core.mr_events import (
    HUMAN_COMMIT,
    MergeRequestEvent,
    closed_by_promoter,
    foreign_settlement,
    refusal,
)
from promoter.core.results import DeploymentStatus
from promoter.ports.git import GC_BRANCH, GC_KEY, MergeRequest, branch_for
from promoter.ports.pipeline import DeployedState

# The user promoter acts as on the forge (GitProvider.own_username), asked only for an MR
# titled as promoter closes them: a forge read the first time.
OwnUser = Callable[[], "str | None"]
# Ledger statuses that mean "the MR is open, its outcome not yet recorded".
WAITING = frozenset({DeploymentStatus.MR_OPENED, DeploymentStatus.APPROVED,
                     DeploymentStatus.DECOMMISSIONING})
# The forge's MR state -> the MR Hook action that reports it.
ACTION_FOR_STATE = {"merged": "merge", "closed": "close"}
SWEEP_ACTOR = "reconcile"
# GC MRs read per pass: GC proposes on one branch, so more than one unrecorded is an outage's
# backlog; up to ten a pass catch up without crowding out the deployments' MRs, and a few that
# fail for good (an MR deleted on the forge) do not hide the newer ones behind them.
GC_LIMIT = 10


@dataclass(frozen=True)
class SweepDecision:
    event: MergeRequestEvent | None   # what to feed the outcomes, or None: nothing to do
    reason: str                       # why (for the log), e.g. "still opened", "human_commit"
    # Settled, but not as promoter's MR (another branch or target, or a human's head merged
    # elsewhere): the webhook would not act on it either; worth a warning, not an outcome.
    left_alone: bool = False


def rows_to_look_at(rows: Iterable[DeployedState], limit: int,
                    left_alone: Collection[int] = ()) -> list[DeployedState]:
    """The rows still waiting on their MR, oldest MR first (iids grow with time), at most
    ``limit``: one pass costs at most ``limit`` forge reads, and the rows it settles leave the
    list, so the next pass reaches the newer ones. MRs already found settled but not
    promoter's (``left_alone``) would stay waiting for good and crowd out the others, so they
    are not looked at again."""
    waiting = [row for row in rows if row.status in WAITING and row.mr_iid is not None
               and row.mr_iid not in left_alone]
    return sorted(waiting, key=lambda row: (row.mr_iid or 0, row.name, row.env))[:max(0, limit)]


def of_project(project: int | None, current: int) -> bool:
    """Whether an MR followed (a row's) or noted in ``project`` is one of the ``current``
    project's, the one whose MRs the forge reads by iid. iids restart per project, so one of
    another project (``git.project`` changed) must not be read by its iid here: that reads
    another MR. None: recorded before projects were, taken for the current one as before."""
    return project is None or project == current


def noted_mrs_to_look_at(unrecorded: Iterable[int], left_alone: Collection[int] = (),
                        limit: int = GC_LIMIT) -> list[int]:
    """Noted MRs (GC's, or ones a row left) whose outcome is not recorded, oldest first, at
    most ``limit`` (an older one merged unseen is recorded before newer ones; each recorded
    leaves the list)."""
    return sorted(iid for iid in unrecorded if iid not in left_alone)[:max(0, limit)]


def settled_event(row: DeployedState, mr: MergeRequest, *, pushed_sha: str | None,
                  target_branch: str, project_id: int, project_path: str,
                  own: OwnUser) -> SweepDecision:
    """The merge or close event the forge's ``mr`` stands for, when the ledger's ``row`` still
    waits on it; acted on under the webhook's guards only (GitLabHookHandler._act)."""
    if mr.state in ACTION_FOR_STATE and (row.status not in WAITING or mr.iid != row.mr_iid):
        return SweepDecision(None, "already recorded")
    return _settled(row.name, row.env, branch_for(row.name, row.env), mr, pushed_sha=pushed_sha,
                    target_branch=target_branch, project_id=project_id,
                    project_path=project_path, own=own)


def settled_left_event(name: str, env: str, mr: MergeRequest, *, pushed_sha: str | None,
                       target_branch: str, project_id: int, project_path: str,
                       own: OwnUser) -> SweepDecision:
    """The merge or close event of an MR deployment (name, env)'s row left before its outcome
    was recorded (state.left_mrs), under the webhook's guards."""
    return _settled(name, env, branch_for(name, env), mr, pushed_sha=pushed_sha,
                    target_branch=target_branch, project_id=project_id,
                    project_path=project_path, own=own)


def settled_gc_event(mr: MergeRequest, *, pushed_sha: str | None, target_branch: str,
                     project_id: int, project_path: str) -> SweepDecision:
    """The merge or close event GC's ``mr`` stands for (one noted as unrecorded), under the
    same guards: its head must be the one promoter pushed to GC's branch. A close as
    superseded is recorded too: recording it is what stops the sweep reading that MR."""
    return _settled(*GC_KEY, GC_BRANCH, mr, pushed_sha=pushed_sha, target_branch=target_branch,
                    project_id=project_id, project_path=project_path)


def _settled(name: str, env: str, branch: str, mr: MergeRequest, *, pushed_sha: str | None,
             target_branch: str, project_id: int, project_path: str,
             own: OwnUser | None = None) -> SweepDecision:
    """``own`` None: every close is recorded (GC's MRs, whose close as superseded must be)."""
    action = ACTION_FOR_STATE.get(mr.state)
    if action is None:
        return SweepDecision(None, f"still {mr.state}")
    pushed = (branch, pushed_sha) if pushed_sha is not None else None
    refused = refusal(mr.iid, pushed=pushed, source_branch=mr.source_branch,
                      head_sha=mr.head_sha, target_branch=mr.target_branch,
                      expected_target=target_branch)
    foreign = foreign_settlement(action, refused, target_branch=mr.target_branch,
                                 expected_target=target_branch)
    if refused is not None and not foreign:
        return SweepDecision(None, refused[0] if refused[0] == HUMAN_COMMIT else refused[1],
                             left_alone=True)
    if own is not None and closed_by_promoter(action, mr.title, mr.source_branch,
                                              closer=mr.closed_by, own=own):
        return SweepDecision(None, "promoter closed it (superseded or withdrawn)")
    return SweepDecision(MergeRequestEvent(
        action=action, project_id=project_id, project_path=project_path, iid=mr.iid,
        state=mr.state, source_branch=mr.source_branch, target_branch=mr.target_branch,
        head_sha=mr.head_sha, url=mr.url, user=SWEEP_ACTOR, name=name, env=env,
        merge_commit_sha=mr.merge_commit_sha, title=mr.title,
        pushed_sha=pushed_sha if foreign else None), action)
