"""Merge-request and pipeline events, whichever forge they come from.

GitLab's webhooks (parsed by core.gitlab_payloads) and the local provider's ``promoter mr``
commands produce the same events; service.outcomes turns them into MLflow tags, ledger rows and
audit entries. Only branches named ``promote/<name>/<env>`` with valid names carry a
(name, env) that promoter acts on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from promoter.core.naming import label_problem
from promoter.core.results import OPEN_MR, DeploymentStatus
from promoter.ports.git import (
    BRANCH_PREFIX,
    GC_BRANCH,
    GC_KEY,
    SUPERSEDED_SUFFIX,
    WITHDRAWN_SUFFIX,
)

REOPEN = "reopen"
ACTED_ON = frozenset({"approved", "merge", "close", REOPEN})
# The actions that settle an MR: recorded even when its head is someone else's (see
# ``foreign_settlement``).
SETTLING = frozenset({"merge", "close"})
HUMAN_COMMIT = "human_commit"
# Pipeline statuses GitLab documents; an event with another (a newer GitLab's) is ignored.
PIPELINE_STATUSES = frozenset({"created", "waiting_for_resource", "preparing",
                               "waiting_for_callback", "pending", "running", "success", "failed",
                               "canceling", "canceled", "skipped", "manual", "scheduled"})


@dataclass(frozen=True)
class MergeRequestEvent:
    action: str
    project_id: int
    project_path: str
    iid: int
    state: str
    source_branch: str
    target_branch: str
    head_sha: str | None
    url: str
    user: str | None
    name: str | None          # deployment name from the branch, None for other branches
    env: str | None
    merge_commit_sha: str | None = None
    title: str = ""
    # Set on a settling event of promoter's MR whose head is not the commit promoter pushed:
    # that commit (``head_sha`` is then someone else's). None: the head is promoter's own.
    pushed_sha: str | None = None

    @property
    def kind(self) -> str:
        return "merge_request"

    @property
    def foreign_head(self) -> bool:
        """The MR settled with a head promoter did not push (nor check, nor sign)."""
        return self.pushed_sha is not None and self.pushed_sha != self.head_sha


@dataclass(frozen=True)
class PipelineEvent:
    pipeline_id: int
    project_id: int
    project_path: str
    ref: str
    head_sha: str
    status: str
    iid: int | None           # the MR the pipeline ran for, when any
    name: str | None
    env: str | None

    @property
    def kind(self) -> str:
        return "pipeline"


ForgeEvent = MergeRequestEvent | PipelineEvent


def closed_by_promoter(action: str, title: str, source_branch: str, *, closer: str | None,
                       own: Callable[[], str | None]) -> bool:
    """A close promoter made of a deployment's MR, told by the title it gave it (superseded
    by a newer one, or withdrawn because the target branch already holds what the
    environment should run) and by who closed it: ``closer``, the forge's user who did, must
    be the user promoter acts as, which ``own`` tells (a forge read, so asked only for a
    close titled as promoter's; None: a forge without accounts, where only promoter
    retitles). A reviewer who retitles the MR so and closes it is a reviewer: their close is
    recorded. No reviewer's outcome to record (a "closed" tag, a settled ledger row) for
    promoter's own. GC's withdrawn MR is not one: recording its close ends the sweep's
    watch."""
    titled = title.endswith(SUPERSEDED_SUFFIX) or \
        (title.endswith(WITHDRAWN_SUFFIX) and source_branch != GC_BRANCH)
    if action != "close" or not titled:
        return False
    user = own()
    return user is None or closer == user


def reopened_status(row_status: str | None, *, removal: bool) -> str | None:
    """What the reopen of the MR a deployment's row follows puts the row (and its version's
    tag) back to, or None for nothing: only a recorded close (the row ``closed``) is undone,
    to the MR waiting on a review again, as ``mr_opened``, or ``decommissioning`` for a
    removal MR (``removal``: state.closed_removals), whose merge must remove, not deploy."""
    if row_status != DeploymentStatus.CLOSED:
        return None
    return DeploymentStatus.DECOMMISSIONING if removal else DeploymentStatus.MR_OPENED


def approval_status(row_status: str | None, open_now: Callable[[], bool]) -> str | None:
    """What an ``approved`` of the MR a deployment's row follows makes of it: ``approved``
    while the row waits on the MR, else None (audited only). GitLab sends each hook from a job
    of its own, so an approval sent just before an (auto-)merge or a close can arrive after
    it, and one resent by hand from GitLab's *Recent events* whenever it is resent: taken as
    it came, it put a settled row back to ``approved`` and wrote that over the version's tag.
    A row ``closed`` is asked about (``open_now``: the MR is open on the forge now): GitLab
    approves only open MRs, so an approval of an MR open again is one after a reopen whose
    recording is still to come (or whose hook was lost), not a late one."""
    if row_status in OPEN_MR:
        return DeploymentStatus.APPROVED
    if row_status == DeploymentStatus.CLOSED and open_now():
        return DeploymentStatus.APPROVED
    return None


def approvals_short(action: str, counted: tuple[int, int] | None) -> str | None:
    """Why an ``approved`` event is one approval of several, not the MR approved, or None.
    ``counted`` is (approvals given, approvals required) where only promoter counts them
    (GitLab CE/Free sends ``approved`` on every approval), None where the forge sends
    ``approved`` only once every required approval is in (GitLab Premium). Short of the count
    it is what Premium sends as ``approval``: not acted on."""
    if action != "approved" or counted is None:
        return None
    given, required = counted
    if given >= required:
        return None
    return (f"{given} of {required} required approvals: GitLab without approval rules "
            "(CE/Free) sends 'approved' on each approval")


def promotion_key(branch: str) -> tuple[str, str] | None:
    """(name, env) of a promoter branch (GC_KEY for garbage collection's), or None for any
    other branch."""
    if branch == GC_BRANCH:
        return GC_KEY
    parts = branch.split("/")
    if len(parts) != 3 or parts[0] != BRANCH_PREFIX:
        return None
    name, env = parts[1], parts[2]
    # The label rule, not the deployment-name one: a branch an earlier version opened for a
    # name since refused (a KServe suffix) is still promoter's, and its MR events count.
    return (name, env) if label_problem(name) is None and label_problem(env) is None else None


def refusal(iid: int, *, pushed: tuple[str, str] | None, source_branch: str | None,
            head_sha: str | None, target_branch: str | None,
            expected_target: str) -> tuple[str, str] | None:
    """Why an event about MR ``iid`` must not be acted on as promoter's MR, as
    (status, reason), or None when it may. The one rule of the GitLab hook and the reconcile
    sweep: ``pushed`` is the (branch, sha) promoter recorded for the MR; a head someone else
    pushed is ``human_commit``; another source branch (the event names promoter's MR but is
    not about it) or another target (merging there deploys nothing) is ``ignored``.
    ``source_branch``/``target_branch`` None: the event does not say (a pipeline event)."""
    if pushed is None:
        return "ignored", "promoter pushed no commit for this MR"
    branch, sha = pushed
    if source_branch is not None and source_branch != branch:
        return "ignored", f"!{iid} is promoter's MR of branch {branch}, not {source_branch[:200]!r}"
    if head_sha != sha:
        return HUMAN_COMMIT, "its head is not the commit promoter pushed"
    if target_branch is not None and target_branch != expected_target:
        return "ignored", f"!{iid} targets {target_branch[:200]!r}, not {expected_target!r}"
    return None


def foreign_settlement(action: str, refused: tuple[str, str] | None, *,
                       target_branch: str | None, expected_target: str) -> bool:
    """Whether an event ``refusal`` turned down is still to be recorded, as a foreign outcome:
    a merge or close of promoter's MR, on the target branch, whose head someone else pushed.
    Acting on it as promoter's would tag and audit a version promoter never checked as live;
    ignoring it would leave the trail silent about what now is on the target branch."""
    return (refused is not None and refused[0] == HUMAN_COMMIT and action in SETTLING
            and target_branch == expected_target)
