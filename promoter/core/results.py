"""What a pipeline run ends in: typed values, with one JSON shape for the job record.

The job queue stores ``PipelineResult.as_dict()``; ``jobs show``, the demo and the tests read
that record, and ``from_dict`` turns it back into this type for code that needs more than one
field of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from promoter.ports.git import Outcome


class DeploymentStatus(StrEnum):
    """``promoter.<env>.status`` on the model version (and the ledger's status column)."""

    MR_OPENED = "mr_opened"
    APPROVED = "approved"
    MERGED = "merged"
    # Merged, but its head was not the commit promoter pushed: what reached the target branch
    # is someone else's, never checked by policy nor signed; the version is not live.
    MERGED_UNVERIFIED = "merged_unverified"
    CLOSED = "closed"
    NEEDS_ATTENTION = "needs_attention"   # someone else pushed to promoter's branch
    DENIED = "denied"                     # a policy rule said no
    INVALID = "invalid"                   # the intent cannot be deployed as it is
    FAILED = "failed"                     # the job was parked for another reason
    DECOMMISSIONING = "decommissioning"   # the removal MR is open
    DECOMMISSIONED = "decommissioned"
    SUPERSEDED = "superseded"             # a newer version became live in its place
    ROLLED_BACK = "rolled_back"           # an older version became live in its place


# A ledger row in one of these names the version the clusters run (or ran until its removal
# merges); in one of OPEN_MR, a newer version proposed in an MR not merged yet.
RUNNING_ROW = frozenset({DeploymentStatus.MERGED, DeploymentStatus.MERGED_UNVERIFIED,
                         DeploymentStatus.DECOMMISSIONING})
OPEN_MR = frozenset({DeploymentStatus.MR_OPENED, DeploymentStatus.APPROVED})

# Written by the clusters' feedback (promoter.core.cluster_status), never by a promotion: every
# cluster runs the merged version, Synced and Healthy.
DEPLOYED = "deployed"


def replaced_status(live: str, replacing: str) -> DeploymentStatus:
    """What the version that stops being live becomes: rolled back when an older one replaces
    it, superseded otherwise (MLflow versions are increasing integers)."""
    older = live.isdigit() and replacing.isdigit() and int(replacing) < int(live)
    return DeploymentStatus.ROLLED_BACK if older else DeploymentStatus.SUPERSEDED


STATUS_FOR_OUTCOME = {
    Outcome.CREATED: DeploymentStatus.MR_OPENED, Outcome.UPDATED: DeploymentStatus.MR_OPENED,
    Outcome.SUPERSEDED: DeploymentStatus.MR_OPENED, Outcome.UNCHANGED: DeploymentStatus.MR_OPENED,
    Outcome.CLOSED_BY_HUMAN: DeploymentStatus.CLOSED,
    Outcome.HUMAN_COMMITS: DeploymentStatus.NEEDS_ATTENTION,
}
SKIPPED = "skipped"


@dataclass(frozen=True)
class ClosedMr:
    """An MR the proposal closed, or updated in place to another version: its iid, why
    (``superseded``, ``withdrawn`` or ``replaced``), and, when the ledger row named it, its
    version and the status that version gets now (None: none to write, e.g. the MR was for
    the version now proposed)."""

    iid: int
    closed_as: str
    version: str | None = None
    status: DeploymentStatus | None = None
    reason: str = ""

    @property
    def event(self) -> str:
        """The audit event naming it: ``mr.superseded``, ``mr.withdrawn`` or ``mr.replaced``."""
        return f"mr.{self.closed_as}"

    def as_dict(self) -> dict[str, Any]:
        return {"iid": self.iid, "as": self.closed_as, "version": self.version,
                "status": self.status.value if self.status else None, "reason": self.reason}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ClosedMr:
        status = record.get("status")
        return cls(int(record["iid"]), str(record["as"]), record.get("version"),
                   DeploymentStatus(status) if status else None, record.get("reason") or "")


@dataclass(frozen=True)
class PipelineResult:
    """One promotion or decommission, finished (a failure raises instead)."""

    outcome: Outcome | None               # None: skipped, nothing to do (see ``reason``)
    status: DeploymentStatus | None = None
    version: str | None = None            # the version deployed (or removed)
    requested_version: str | None = None  # the version the triggering event named
    name: str | None = None               # deployment name
    reason: str | None = None
    mr_iid: int | None = None
    mr_url: str | None = None
    head_sha: str | None = None
    commit_created: bool = False
    image: str | None = None              # REPOSITORY@sha256:…
    signature: str | None = None
    warnings: tuple[str, ...] = ()
    removes: tuple[str, ...] = ()         # decommission: the directories it removes
    inputs: tuple[tuple[str, str], ...] = ()  # (what, sha256 digest): intent, manifests, image
    closed_mr: ClosedMr | None = None     # the open MR the proposal closed (core.closed_mr)

    @property
    def skipped(self) -> bool:
        return self.outcome is None

    def as_dict(self) -> dict[str, Any]:
        """The job record's ``result`` (JSON); ``outcome`` is ``skipped`` when nothing ran."""
        record: dict[str, Any] = {
            "outcome": self.outcome.value if self.outcome else SKIPPED,
            "status": self.status.value if self.status else None,
            "version": self.version, "requested_version": self.requested_version,
            "name": self.name, "reason": self.reason, "mr_iid": self.mr_iid,
            "mr_url": self.mr_url, "head_sha": self.head_sha,
            "commit_created": self.commit_created, "image": self.image,
            "signature": self.signature, "warnings": list(self.warnings),
            "removes": list(self.removes), "inputs": dict(self.inputs),
            "closed_mr": self.closed_mr.as_dict() if self.closed_mr else None}
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PipelineResult:
        outcome = record.get("outcome")
        status = record.get("status")
        return cls(
            outcome=None if outcome in (None, SKIPPED) else Outcome(outcome),
            status=DeploymentStatus(status) if status else None,
            version=record.get("version"), requested_version=record.get("requested_version"),
            name=record.get("name"), reason=record.get("reason"), mr_iid=record.get("mr_iid"),
            mr_url=record.get("mr_url"), head_sha=record.get("head_sha"),
            commit_created=bool(record.get("commit_created")), image=record.get("image"),
            signature=record.get("signature"), warnings=tuple(record.get("warnings") or ()),
            removes=tuple(record.get("removes") or ()),
            inputs=tuple(sorted((record.get("inputs") or {}).items())),
            closed_mr=ClosedMr.from_dict(record["closed_mr"]) if record.get("closed_mr")
            else None)
