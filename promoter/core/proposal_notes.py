"""The notes promoter leaves on a merge request when it cannot do as asked: someone else's
commits on the branch, an MR withdrawn, approvals GitLab does not enforce. Text only: the
flow (core.proposal) decides when each is written."""

from __future__ import annotations

from promoter.ports.forge import RESET_APPROVALS_ON_PUSH
from promoter.ports.git import Proposal


def human_commits_text(proposal: Proposal) -> str:
    return (f"This branch has commits that promoter did not make, so promoter did not apply "
            f"version {proposal.version} here and will not overwrite them. Merge or close this "
            "merge request (and delete the branch) to let promoter continue.")


def already_there_text(proposal: Proposal) -> str:
    return (f"`{proposal.target_branch}` already holds exactly what promoter now proposes for "
            f"{proposal.env}, and merging this merge request would change that, so promoter "
            f"closed it. A new merge request is opened when {proposal.env} is to change "
            "again.")


def unenforced_text(proposal: Proposal) -> str:
    text = (f"This environment requires **{proposal.approvals_required}** approval(s). "
            "GitLab does not enforce that count here (approval rules need GitLab Premium; on "
            "Premium, where \"Prevent editing approval rules in merge requests\" keeps promoter "
            "from adding its rule, the project's approval rules require fewer or let "
            "others than the environment's approvers approve), so the "
            "requirement is stated here and recorded in promoter's audit trail; reviewers must "
            "enforce it.")
    if proposal.approver_user_ids or proposal.approver_group_ids:
        text += ("\n\nThe approvals must come from the environment's approvers: GitLab user "
                 f"ids {_id_list(proposal.approver_user_ids)} and members of the groups with "
                 f"ids {_id_list(proposal.approver_group_ids)}.")
    if proposal.auto_merge:
        text += (f"\n\nAuto-merge is **not** set: {unenforced_auto_merge(proposal)}. Merge it "
                 "by hand once it has its approvals.")
    return text


def unenforced_auto_merge(proposal: Proposal) -> str:
    return (f"GitLab would merge it once the pipeline passes without the "
            f"{proposal.approvals_required} approval(s) {proposal.env} requires, since it "
            "does not enforce them (GitLab Premium approval rules do); use Premium approval "
            f"rules, or set environments.{proposal.env}.auto_merge: false or approvals: 0")


def _id_list(ids: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in sorted(ids)) or "(none)"


def setting_list(names: tuple[str, ...]) -> str:
    return " and ".join(f"`{name}`" for name in names)


# The record, in promoter's own approval-settings note, that approvals for an older head may
# count: core.approval_guard reads it back once the settings hold. A marker, not prose, so
# rewording a note cannot silently drop the guard (GitLab does not render HTML comments).
STALE_APPROVALS_MARKER = "<!-- promoter-approvals:may-be-stale -->"
# Notes written before the marker said so only in prose, always with these words.
_MAY_STILL_COUNT = "may still count"


def may_carry_stale_approvals(note: str) -> bool:
    """Whether promoter's approval-settings note says approvals for an older head may count."""
    return STALE_APPROVALS_MARKER in note or _MAY_STILL_COUNT in note


def _marked_stale(text: str) -> str:
    return f"{text}\n\n{STALE_APPROVALS_MARKER}"


def stale_after_fix_reason(proposal: Proposal) -> str:
    return ("reset_approvals_on_push is on now, but turning it on removed no approval "
            "already given, and approvals given before may be for an older version "
            f"than {proposal.version}; reviewers must revoke their approvals (a later promoter "
            "run then sets auto-merge) and approve again, or a maintainer merges it")


def stale_after_fix_text(proposal: Proposal) -> str:
    return _marked_stale(
        "Approvals are now removed when commits are added to the source branch "
        "(`reset_approvals_on_push`), but turning that on removed no approval already "
        "given: **approvals given before promoter wrote this "
        f"{_MAY_STILL_COUNT} for version {proposal.version}, though they may be for an "
        "older version.** Reviewers must revoke their approvals and approve again (once "
        "the merge request has none, a later promoter run sets auto-merge), or a "
        "maintainer merges it after checking it.")


def settings_hold_text(proposal: Proposal) -> str:
    return (f"This environment requires **{proposal.approvals_required}** approval(s). "
            "Approvals are now removed when commits are added to the source branch, and those "
            "given while they were not are gone from this merge request, so the approvals "
            "given from now on are for what it holds.")


def weak_settings_text(proposal: Proposal, weak: tuple[str, ...], pushed_over: str | None,
                        stale: str | None, repushed: bool = False) -> str:
    text = (f"This environment requires **{proposal.approvals_required}** approval(s), but "
            f"the project's approval settings {setting_list(weak)} are off (or promoter's "
            "token may not read them), so approvals can outlive a push of a new version or "
            "anyone who can edit this MR can lower its approval rule. A project maintainer "
            "should turn on \"Remove all approvals when commits are added to the source "
            "branch\" and \"Prevent editing approval rules in merge requests\" (Settings → "
            "Merge requests → Approval settings), the latter together with a project approval "
            "rule for the target branch that requires the count: it keeps promoter from adding "
            "its own rule to the MR.")
    if stale is not None:
        text += (f"\n\n**Version {proposal.version} replaced version {stale} here; approvals "
                 f"given for version {stale} do not approve version {proposal.version}.** "
                 "promoter could not withdraw them (that needs a project or group access "
                 f"token), so they {_MAY_STILL_COUNT}: reviewers must approve again, and "
                 "promoter does not set auto-merge.")
        text = _marked_stale(text)
    elif pushed_over is not None and RESET_APPROVALS_ON_PUSH in weak:
        text += (f"\n\nVersion {proposal.version} replaced version {pushed_over} here; "
                 f"promoter withdrew the approvals given before, so version "
                 f"{proposal.version} needs its own.")
    elif repushed:
        text += (f"\n\n**promoter pushed a new head of version {proposal.version} here "
                 "(new content, or its changes onto a newer target branch); approvals given "
                 f"before that push {_MAY_STILL_COUNT} for it.** Reviewers must check the changes "
                 "(and approve again if they keep them), and promoter does not set auto-merge.")
        text = _marked_stale(text)
    return text
