"""The forge port: the few operations the merge-request lifecycle (core.proposal) needs.

GitLab (adapters.gitlab) and the embedded local provider (adapters.localgit) implement it.
A write whose outcome is unknown raises ``errors.OutcomeUnknown``; the lifecycle then looks
again before writing anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from promoter.ports.git import FileContent, MergeRequest, Proposal

ActionKind = Literal["create", "update", "delete"]

# The project settings (GitLab's names, ``GET /projects/:id/approvals``) that keep an approval
# rule meaningful: with the first off, approvals given for an earlier push still count after a
# new one; with the second off, anyone who can edit the MR may lower its approval rule.
RESET_APPROVALS_ON_PUSH = "reset_approvals_on_push"
NO_OVERRIDES_PER_MR = "disable_overriding_approvers_per_merge_request"


@dataclass(frozen=True, order=True)
class Action:
    """One file change of a commit (core.changes plans them; a forge applies them)."""

    path: str
    kind: ActionKind
    content: FileContent | None = None   # text or bytes; None for delete


class Forge(Protocol):
    def merge_requests(self, source_branch: str) -> list[MergeRequest]:
        """Every MR of the branch, newest first."""

    def branch_head(self, branch: str) -> str | None: ...

    def is_ancestor(self, commit: str, revision: str) -> bool:
        """True when ``commit`` is ``revision`` or one of its ancestors (``revision`` contains
        it); False as well when either is unknown to the repository."""

    def commit_message(self, sha: str) -> str: ...

    def read_files(self, ref: str, paths: Sequence[str],
                   prefixes: Sequence[str]) -> dict[str, FileContent]:
        """Existing files among ``paths`` plus every file under ``prefixes``, at ``ref``: a
        UTF-8 file as its text, any other as its bytes (ports.git.from_blob)."""

    def list_files(self, ref: str, prefix: str) -> frozenset[str] | None:
        """The path of every file under ``prefix`` at branch ``ref``, whatever its content
        (no file is read); None when there is no branch ``ref``."""

    def commit(self, branch: str, start_branch: str, actions: Sequence[Action],
               message: str, expected_head: str | None) -> str:
        """One commit of ``actions`` on ``start_branch``'s head, stored as ``branch``, which
        must not exist (``expected_head`` None) or is replaced (where the forge can check it,
        only while it is still at ``expected_head``)."""

    def delete_branch(self, branch: str) -> None: ...

    def create_mr(self, proposal: Proposal, description: str) -> MergeRequest: ...

    def update_mr(self, iid: int, title: str, description: str,
                  add_labels: Sequence[str] = (),
                  remove_labels: Sequence[str] = ()) -> MergeRequest:
        """New title and description; labels only added and removed as named, so those a
        reviewer put on the MR (``do-not-merge``) stay."""

    def close_mr(self, iid: int, title: str) -> None: ...

    def own_username(self) -> str | None:
        """The user promoter acts as (GitProvider.own_username)."""

    def upsert_note(self, iid: int, heading: str, body: str) -> None:
        """One bot comment per heading, edited in place."""

    def own_note(self, iid: int, heading: str) -> str | None:
        """The text of promoter's own comment under ``heading`` (``upsert_note``), or None."""

    def approved_by(self, iid: int) -> tuple[str, ...]:
        """Who has approved the MR now (GitLab counts them whichever head they approved)."""

    def require_approvals(self, iid: int, count: int, user_ids: Sequence[int] = (),
                          group_ids: Sequence[int] = ()) -> bool:
        """Install the approval rule; False when the forge has no approval rules."""

    def weak_approval_settings(self) -> tuple[str, ...]:
        """Which of ``RESET_APPROVALS_ON_PUSH`` and ``NO_OVERRIDES_PER_MR`` are off (or could
        not be read) on a forge whose rules ``require_approvals`` installed; () when both
        hold or the forge enforces the equivalent itself."""

    def reset_approvals(self, iid: int) -> bool:
        """Withdraw every approval the MR has; False when the forge does not let promoter."""

    def auto_merge(self, iid: int, sha: str) -> str | None:
        """Merge when the pipeline passes, only while the head is ``sha``; a warning or None."""
