"""The git provider port: turn rendered files into exactly one merge request per (model, env).

The pipeline hands a ``Proposal`` (every file promoter owns for the deployment, plus the MR
text) to ``GitProvider.propose``. A provider is level-triggered: it looks at what exists (the
target branch tree, the branch ``promote/<name>/<env>``, the MRs of that branch) and does only
what is missing, so calling it twice with the same proposal changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

BRANCH_PREFIX = "promote"
GC_BRANCH = "promoter/gc"             # the one branch of garbage collection's merge request
GC_KEY = ("gc", "collect")            # its (name, env): marker, commit trailer, MR events
SUPERSEDED_SUFFIX = " - superseded"   # promoter retitles the MRs it closes as superseded
WITHDRAWN_SUFFIX = " - withdrawn"     # ... and those it closes because nothing needs them


# A file's content: text (YAML, Markdown, ...) or, for binary files such as a PNG plot, bytes.
FileContent = str | bytes


def from_blob(raw: bytes) -> FileContent:
    """A blob as read from a forge: its text when it is UTF-8, else its bytes unchanged."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def texts(files: Mapping[str, FileContent]) -> dict[str, str]:
    """The text files of ``files``; binary ones (a committed plot) are no caller's text."""
    return {path: content for path, content in files.items() if isinstance(content, str)}


def branch_for(name: str, env: str) -> str:
    """The one deterministic branch of a (deployment, environment) pair."""
    return f"{BRANCH_PREFIX}/{name}/{env}"


class Outcome(StrEnum):
    CREATED = "created"                  # a new MR was opened
    UPDATED = "updated"                  # the open MR got a new commit or new text
    UNCHANGED = "unchanged"              # nothing to do: the MR or the target already has it
    SUPERSEDED = "superseded"            # the open MR was closed and a new one opened
    CLOSED_BY_HUMAN = "closed_by_human"  # a person closed the MR of this version: left closed
    HUMAN_COMMITS = "human_commits"      # the branch carries commits not made by promoter


@dataclass(frozen=True)
class Proposal:
    """Everything promoter wants on the target branch for one (model, version, env)."""

    model: str                            # MLflow registered model name
    name: str                             # deployment name (DNS label)
    env: str
    version: str
    # repo-relative path -> full text (str) or binary content (bytes); None = delete
    files: Mapping[str, FileContent | None]
    managed_prefixes: tuple[str, ...]     # files under these that are not in ``files`` go away
    title: str
    description: str                      # markdown, already escaped by core.mr_text
    labels: tuple[str, ...] = ()
    approvals_required: int = 0
    # Who must approve (policy.teams.<team>.approvers.<env>): GitLab user and group ids that
    # the MR's approval rule lists as eligible approvers; empty: anyone with the right access.
    approver_user_ids: tuple[int, ...] = ()
    approver_group_ids: tuple[int, ...] = ()
    auto_merge: bool = False
    target_branch: str = "main"
    notes: Mapping[str, str] = field(default_factory=dict)  # bot comments: heading -> body
    # A change that is not one deployment's (garbage collection) names its own branch.
    branch_name: str | None = None
    # Files committed along with a change of ``files`` but never a reason for a commit of
    # their own (the audit head anchor: it moves with every audit entry).
    riders: Mapping[str, str] = field(default_factory=dict)
    # Under these prefixes the branch must be the target branch plus exactly this change: a
    # branch that still carries an earlier proposal's changes there (garbage collection whose
    # plan shrank) is rebuilt from the target branch.
    exact_under: tuple[str, ...] = ()
    # A person asked for this version now (`promoter rollback`): proposed even when the
    # branch's newest MR is this version's, closed by a reviewer (otherwise left closed).
    repropose: bool = False

    @property
    def branch(self) -> str:
        return self.branch_name or branch_for(self.name, self.env)


@dataclass(frozen=True)
class MergeRequest:
    """A merge request as promoter sees it (GitLab's or the local provider's)."""

    iid: int
    id: int
    url: str
    state: str                            # opened | closed | merged | locked
    source_branch: str
    target_branch: str
    title: str
    head_sha: str | None
    description: str = ""
    labels: tuple[str, ...] = ()
    version: str | None = None            # from promoter's marker in the description
    approvals_required: int = 0
    approved_by: tuple[str, ...] = ()
    merge_commit_sha: str | None = None   # None for a fast-forward merge (GitLab ff method)
    # The squash commit GitLab made when squashing: with the fast-forward method it, not a
    # merge commit, is what lands on the target branch.
    squash_commit_sha: str | None = None
    detailed_merge_status: str | None = None
    auto_merge: bool = False
    # Who closed it (GitLab's ``closed_by``): tells promoter's own closes from a reviewer's
    # who retitled the MR as promoter would. None: not closed, or the forge does not say.
    closed_by: str | None = None

    @property
    def landed_commit(self) -> str | None:
        """The commit the merge put on the target branch, which every later revision of it
        contains: the merge commit, else the squash commit (fast-forward with squash), else
        the head itself (a plain fast-forward)."""
        return self.merge_commit_sha or self.squash_commit_sha or self.head_sha


@dataclass(frozen=True)
class ProposalResult:
    outcome: Outcome
    merge_request: MergeRequest | None
    head_sha: str | None                  # the branch head promoter pushed (or found)
    commit_created: bool
    superseded_iid: int | None = None
    # The open MR promoter closed as withdrawn: the target branch already holds the proposal,
    # and that MR carried something else.
    withdrawn_iid: int | None = None
    # With no MR to follow (the target branch already holds the proposal, the open MR
    # withdrawn): the branch's newest merged MR, when it is of this version. Its merge carries
    # the version: the ledger row keeps it, so Argo CD's reports can be judged against it.
    landed_by: MergeRequest | None = None
    approvals_enforced: bool = True       # False: the forge has no approval rules (Free tier)
    warnings: tuple[str, ...] = ()
    changed_paths: tuple[str, ...] = ()   # what the MR changes on the target branch

    @property
    def mr_iid(self) -> int | None:
        return self.merge_request.iid if self.merge_request else None

    @property
    def mr_url(self) -> str | None:
        return self.merge_request.url if self.merge_request else None


class BranchReader(Protocol):
    """What reading a branch of the GitOps repository takes, and nothing else: read-only
    commands (`policy check`, `forecast`, `rightsize`) are given one that writes nowhere."""

    def files(self, prefix: str, ref: str) -> dict[str, str]:
        """Every text file under ``prefix`` on branch ``ref`` with its text, in one read (which
        overlays remain; what the other overlays claim; what gc may remove). Binary files
        (not UTF-8, such as a forecast plot) are left out."""

    def paths(self, prefix: str, ref: str) -> frozenset[str] | None:
        """The path of every file under ``prefix`` on branch ``ref``, binary ones included,
        without reading any (which overlay directories remain); None when the branch does not
        exist, which is not the same as a branch with nothing under ``prefix``."""

    def read_many(self, paths: Sequence[str], ref: str) -> dict[str, str]:
        """The text of each of ``paths`` on branch ``ref`` that is there and is UTF-8 text,
        reading those files only (on GitLab each is a request: read a whole tree's few
        kustomization files with ``paths`` then ``read_many``, not ``files``)."""

    def read(self, path: str, ref: str) -> str | None:
        """One text file's text on branch ``ref``, or None when it is not there (or is not
        UTF-8 text)."""


class GitProvider(BranchReader, Protocol):
    def propose(self, proposal: Proposal) -> ProposalResult:
        """Make the branch and its one open MR match ``proposal``; safe to call again."""

    def withdraw(self, branch: str, reason: str) -> MergeRequest | None:
        """Close the open MR of ``branch`` with ``reason`` as a note and delete the branch (a
        change nothing needs any more); the MR as it was, or None when none was open."""

    def get(self, iid: int) -> MergeRequest:
        """One MR by its project-local number; NotFoundError when there is none."""

    def own_username(self) -> str | None:
        """The user promoter acts as on the forge (its closes are that user's); None where the
        forge has no accounts and only promoter retitles MRs (the local provider)."""

    def find(self, name: str, env: str) -> MergeRequest | None:
        """The newest MR of the branch of (name, env), in any state, or None."""

    def open_merge_request(self, branch: str) -> MergeRequest | None:
        """The open MR of ``branch`` (any branch, GC's included), or None."""
