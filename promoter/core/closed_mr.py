"""What becomes of the version of a merge request a proposal closed itself.

A proposal closes the open MR of its branch when another version replaces it (superseded), or
when the target branch already holds what the environment should run (withdrawn); or it
updates that MR in place to another version (replaced: ``git.newer_version: update``, or a
rollback to an older version while a newer one's MR is open). Nobody can
merge that MR any more, yet its version still says ``promoter.<env>.status=mr_opened`` (or
``approved``; ``decommissioning`` for a removal MR). The GitLab hook and the MR sweep leave
promoter's own closes alone (they would otherwise record a reviewer's close), so the proposal
that closed the MR says what became of its version, before it writes its own status.

The version is the one the deployment's ledger row named for that MR before the proposal: the
row is keyed by model and environment, so it is this model's version; an MR the row did not
name (a retry after a crash between the close and the write-back) is audited without a version,
and nothing is written for it.
"""

from __future__ import annotations

from promoter.core.results import OPEN_MR, ClosedMr, DeploymentStatus
from promoter.errors import NotFoundError
from promoter.ports.git import Outcome, ProposalResult
from promoter.ports.pipeline import DeployedState, Progress
from promoter.ports.registry import Registry

SUPERSEDED = "superseded"
WITHDRAWN = "withdrawn"
# Not closed but updated in place to another version (git.newer_version: update, a rollback's
# older version): the version it proposed before is as gone from it as from a closed MR.
REPLACED = "replaced"


def closed_by(result: ProposalResult, before: DeployedState | None, proposed_version: str,
              instead: str) -> ClosedMr | None:
    """The MR ``result`` says the proposal closed, with what its version becomes. ``before``
    is the deployment's ledger row as it was before the proposal; ``instead`` says what is
    proposed now (e.g. "version 4 is proposed instead"), for the version's reason tag."""
    if result.superseded_iid is not None:
        iid, closed_as = result.superseded_iid, SUPERSEDED
    elif result.withdrawn_iid is not None:
        iid, closed_as = result.withdrawn_iid, WITHDRAWN
    elif (result.outcome in (Outcome.UPDATED, Outcome.UNCHANGED)
          and result.merge_request is not None and result.merge_request.state == "opened"
          and before is not None and before.mr_iid == result.mr_iid
          and before.version != proposed_version and before.status in OPEN_MR):
        # Only this case: the row named the MR for another version still open, and nobody
        # else will say the MR no longer proposes it (it stays open, so no hook fires).
        # UNCHANGED too: a retry after a crash between the push and the write-back finds
        # the MR updated already, and the row still naming the version it replaced. Open
        # only: a merged MR's own outcome recording speaks for it.
        iid = result.merge_request.iid
        return ClosedMr(iid, REPLACED, before.version, DeploymentStatus.CLOSED,
                        f"merge request !{iid} was updated: {instead}")
    else:
        return None
    if before is None or before.mr_iid != iid:
        return ClosedMr(iid, closed_as)
    if before.version == proposed_version:
        # The proposal writes this version's status itself, the last word on it.
        return ClosedMr(iid, closed_as, before.version)
    if before.status in OPEN_MR:
        # Closed unmerged: nothing of it reached the target branch.
        return ClosedMr(iid, closed_as, before.version, DeploymentStatus.CLOSED,
                        f"merge request !{iid} {closed_as}: {instead}")
    if before.status == DeploymentStatus.DECOMMISSIONING:
        # A removal MR closed: the target branch still runs the version it would have removed.
        return ClosedMr(iid, closed_as, before.version, DeploymentStatus.MERGED,
                        f"removal merge request !{iid} {closed_as}: {instead}")
    return ClosedMr(iid, closed_as, before.version)


def write_back(registry: Registry, model: str, env: str, closed: ClosedMr | None,
               progress: Progress) -> None:
    """The closed MR's version gets its new status (and why). A version gone from MLflow has
    no tags to set: the job's audit entry still names the MR."""
    if closed is None:
        return
    why = {SUPERSEDED: "another version replaces it",
           REPLACED: "updated in place to propose another version"}.get(
        closed.closed_as, "it carried something else than the target branch already holds")
    progress("merge request", closed.closed_as, f"!{closed.iid}" + (
        f" (version {closed.version})" if closed.version else "") + f": {why}")
    if closed.version is not None and closed.status is not None:
        write_back_if_present(registry, model, closed.version, env,
                              {"status": closed.status, "reason": closed.reason}, progress)


def write_back_if_present(registry: Registry, model: str, version: str, env: str,
                          values: dict[str, str], progress: Progress) -> None:
    """``values`` on the version's tags; nothing to tag when MLflow no longer has the model or
    version (the job's audit entry and the ledger still record what happened)."""
    try:
        registry.write_back(model, version, env, values)
    except NotFoundError:
        progress("write-back", "skipped", f"{model!r} version {version} is not in MLflow")
