"""The merge-request lifecycle, written once against the small ``Forge`` port (ports.forge).

Provider-neutral and pure: GitLab (adapters.gitlab) and the embedded local provider
(adapters.localgit) each implement ``Forge``; this module decides what to do. Every attempt
starts by looking at what exists, so an attempt cut short by a timeout, a 5xx or a lost response
is simply run again: a commit whose response was lost is found on the branch and not posted
twice, an MR created blind is found by its source branch. Outcomes are judged against the first
look, so a faulty run reports the same result as a clean one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from promoter.core import changes
from promoter.core.approval_guard import APPROVAL_SETTINGS_NOTE, approvals_from_weak_times
from promoter.core.mr_text import (
    changes_section,
    commit_message,
    is_promoter_message,
    promoter_label,
    proposed_for_another_model,
    with_marker,
)
from promoter.core.proposal_notes import (
    already_there_text,
    human_commits_text,
    setting_list,
    unenforced_auto_merge,
    unenforced_text,
    weak_settings_text,
)
from promoter.errors import PermanentError, TransientError
from promoter.ports.forge import RESET_APPROVALS_ON_PUSH, Action, Forge
from promoter.ports.git import (
    SUPERSEDED_SUFFIX,
    WITHDRAWN_SUFFIX,
    MergeRequest,
    Outcome,
    Proposal,
    ProposalResult,
)

HUMAN_COMMITS_NOTE = "promoter: branch changed by someone else"
SUPERSEDED_NOTE = "promoter: superseded"
WITHDRAWN_NOTE = "promoter: withdrawn"
APPROVALS_NOTE = "promoter: approvals"


@dataclass
class _Run:
    """What a propose() call has seen and done, kept across retried attempts."""

    first_open_iid: int | None = None
    first_head: str | None = None
    # Whether the open MR had auto-merge set when the run first looked, before any push: the
    # forge aborts it when its source branch gets another head (GitLab's RefreshService), so
    # what a read after this run's push says depends on whether (and when) that ran.
    first_auto_merge: bool = False
    observed: bool = False
    changed: bool = False
    superseded_iid: int | None = None
    withdrawn_iid: int | None = None
    # The version of the open MR this run pushed a new version onto (None: no such push);
    # approvals given for it must not carry over to the new one.
    pushed_over: str | None = None
    changed_paths: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)


class ProposalFlow:
    def __init__(self, forge: Forge, *, supersede: bool = False, attempts: int = 5,
                 backoff_seconds: float = 1.0, max_wait_seconds: float = 30.0,
                 sleep: Callable[[float], None],
                 pushed_head: Callable[[int], str | None] = lambda iid: None) -> None:
        # ``sleep`` is injected: the core never waits on the real clock by itself.
        # ``pushed_head``: the head promoter recorded pushing to an MR (state.pushed_heads).
        self._forge = forge
        self._pushed_head = pushed_head
        self._supersede = supersede
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._max_wait = max_wait_seconds
        self._sleep = sleep

    def propose(self, proposal: Proposal) -> ProposalResult:
        run = _Run()
        for attempt in range(self._attempts):
            try:
                return self._attempt(proposal, run)
            except TransientError as exc:
                wait = exc.retry_after if exc.retry_after is not None else \
                    self._backoff * 2 ** attempt
                if attempt + 1 == self._attempts or wait > self._max_wait:
                    raise  # the job queue retries later (honouring exc.retry_after)
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, proposal: Proposal, run: _Run) -> ProposalResult:
        forge, branch = self._forge, proposal.branch
        mrs = forge.merge_requests(branch)
        open_mr = _open(mrs)
        head = forge.branch_head(branch)
        if not run.observed:
            run.observed, run.first_open_iid, run.first_head = True, _iid(open_mr), head
            run.first_auto_merge = open_mr is not None and open_mr.auto_merge
        if open_mr is None and mrs and not proposal.repropose and \
                self._closed_by_human(mrs[0], proposal.version):
            return self._result(Outcome.CLOSED_BY_HUMAN, mrs[0], head, run)
        prefixes = tuple(p if p.endswith("/") else p + "/" for p in proposal.managed_prefixes)
        paths = changes.paths_to_read(proposal.files)
        target_actions = changes.plan(
            proposal.files, forge.read_files(proposal.target_branch, paths, prefixes), prefixes)
        run.changed_paths = tuple(action.path for action in target_actions)
        if not target_actions:  # the target already holds exactly these files
            already = self._already_on_target(proposal, mrs, open_mr, head, run, paths,
                                              prefixes)
            if already is not None:
                return already
        ours = head is not None and self._is_ours(head, proposal, open_mr, run)
        if open_mr is not None and head is not None and not ours:
            forge.upsert_note(open_mr.iid, HUMAN_COMMITS_NOTE, human_commits_text(proposal))
            return self._result(Outcome.HUMAN_COMMITS, open_mr, head, run)
        if open_mr is not None and self._supersede and open_mr.version != proposal.version:
            self._close_superseded(open_mr, proposal, run)
            open_mr, head, ours = None, forge.branch_head(branch), False
        if head is None or not ours or changes.plan(
                proposal.files, forge.read_files(branch, paths, prefixes), prefixes) or \
                self._carries_more(proposal, target_actions):
            run.changed = True
            riders = changes.plan(proposal.riders, forge.read_files(
                proposal.target_branch, changes.paths_to_read(proposal.riders), ()))
            head = forge.commit(branch, proposal.target_branch,
                                sorted(target_actions + riders), commit_message(proposal),
                                expected_head=head)
            if open_mr is not None and open_mr.version != proposal.version:
                run.pushed_over = open_mr.version or "an earlier version"
        mr = self._upsert_mr(proposal, open_mr, run, changes.summary(target_actions))
        enforced = self._review_settings(proposal, mr, head, run)
        outcome = (Outcome.SUPERSEDED if run.superseded_iid is not None
                   else Outcome.CREATED if mr.iid != run.first_open_iid
                   else Outcome.UPDATED if run.changed else Outcome.UNCHANGED)
        return self._result(outcome, mr, head, run, enforced=enforced)

    def _already_on_target(self, proposal: Proposal, mrs: list[MergeRequest],
                           open_mr: MergeRequest | None, head: str | None, run: _Run,
                           paths: list[str], prefixes: tuple[str, ...]
                           ) -> ProposalResult | None:
        """The target branch holds exactly this proposal: nothing to push. An open MR whose
        branch carries other content (an earlier version, or the overlay a decommission no
        longer wants) would change that once merged, while the registry, the ledger and the
        audit record what the target branch has: promoter's own MR is withdrawn. None: the
        branch holds someone else's commits, reported as with any other proposal."""
        merged = next((mr for mr in mrs if mr.state == "merged"), None)
        # Answered with no MR, the merged MR of this version is what carries it (landed_by).
        landed = merged if merged is not None and merged.version == proposal.version else None
        if run.withdrawn_iid is not None:   # withdrawn by an attempt whose answer was lost
            return self._result(Outcome.UNCHANGED, None, None, run, landed_by=landed)
        if open_mr is None or head is None or not self._carries_other_content(
                proposal, paths, prefixes):
            return self._result(Outcome.UNCHANGED, open_mr or merged, head, run)
        if not self._is_ours(head, proposal, open_mr, run):
            return None
        self._withdraw_open(open_mr, proposal.branch, already_there_text(proposal), run)
        # No MR to follow: the deployment is what the target branch holds (merged).
        return self._result(Outcome.UNCHANGED, None, None, run, landed_by=landed)

    def _carries_other_content(self, proposal: Proposal, paths: list[str],
                               prefixes: tuple[str, ...]) -> bool:
        """Whether the branch differs from ``proposal`` under what it manages."""
        on_branch = self._forge.read_files(proposal.branch, paths, prefixes)
        return bool(changes.plan(proposal.files, on_branch, prefixes)) or \
            self._carries_more(proposal, [])

    def open_mr(self, branch: str) -> MergeRequest | None:
        """The open MR of ``branch`` (at most one: the forge refuses a second), or None."""
        return _open(self._forge.merge_requests(branch))

    def withdraw(self, branch: str, reason: str) -> MergeRequest | None:
        open_mr = self.open_mr(branch)
        if open_mr is None:
            return None
        self._withdraw_open(open_mr, branch, reason)
        return open_mr

    def _withdraw_open(self, open_mr: MergeRequest, branch: str, reason: str,
                       run: _Run | None = None) -> None:
        """Close ``open_mr`` as withdrawn (a note says why) and delete its branch. The title
        tells its close hook and the MR sweep that promoter closed it, not a reviewer."""
        if run is not None:
            run.withdrawn_iid = open_mr.iid
        self._forge.upsert_note(open_mr.iid, WITHDRAWN_NOTE, reason)
        title = open_mr.title if open_mr.title.endswith(WITHDRAWN_SUFFIX) else \
            open_mr.title + WITHDRAWN_SUFFIX
        self._forge.close_mr(open_mr.iid, title)
        self._forge.delete_branch(branch)

    def _carries_more(self, proposal: Proposal, target_actions: list[Action]) -> bool:
        """Whether the branch, under ``proposal.exact_under``, differs from the target branch
        with this change applied: the leftovers of an earlier, larger proposal."""
        if not proposal.exact_under:
            return False
        under = proposal.exact_under
        expected = changes.applied(
            self._forge.read_files(proposal.target_branch, [], under), target_actions)
        on_branch = self._forge.read_files(proposal.branch, [], under)
        return not changes.same_tree(
            {path: text for path, text in expected.items() if changes.under(path, under)},
            on_branch)

    def _is_ours(self, sha: str, proposal: Proposal, open_mr: MergeRequest | None,
                 run: _Run) -> bool:
        # The head promoter recorded pushing decides first: a human's commit can carry
        # promoter's message and key line (amend, cherry-pick, -C HEAD), and read as ours it
        # would be overwritten, or merged as verified content. The message speaks only without
        # a record (the push's record lost to a crash), or when this very run pushed and lost
        # the answer (its head is recorded once the run ends).
        recorded = self._pushed_head(open_mr.iid) if open_mr is not None else None
        if recorded is not None and recorded != sha and not run.changed:
            return False
        message = self._forge.commit_message(sha)
        if not is_promoter_message(message, proposal.name, proposal.env):
            return False
        other = proposed_for_another_model(message, proposal)
        if other is not None:
            raise PermanentError(
                f"branch {proposal.branch} holds promoter's proposal of model {other[:200]!r}, "
                f"not {proposal.model[:200]!r}: both models derive the deployment name "
                f"{proposal.name!r}", hint="give one of them another name (metadata.name in "
                "its intent, or deploy.name)")
        return True

    def _review_settings(self, proposal: Proposal, mr: MergeRequest, head: str,
                         run: _Run) -> bool:
        """Bot notes, the approval rule and auto-merge; False when approvals are unenforced."""
        forge = self._forge
        for heading, body in proposal.notes.items():
            forge.upsert_note(mr.iid, heading, body)
        enforced = forge.require_approvals(mr.iid, proposal.approvals_required,
                                           proposal.approver_user_ids,
                                           proposal.approver_group_ids)
        withheld: str | None = None    # why auto-merge must not be set
        leave = False                  # an auto-merge already set is left exactly as it is
        if not enforced and proposal.approvals_required:
            forge.upsert_note(mr.iid, APPROVALS_NOTE, unenforced_text(proposal))
            _warn(run, f"approval rules unavailable; {proposal.approvals_required} approval(s) "
                  "required by policy are stated in the MR but not enforced by the forge")
            withheld = unenforced_auto_merge(proposal)
        elif proposal.approvals_required:
            # The head moved in this run: promoter pushed (perhaps in an attempt whose answer
            # was lost), so approvals on the MR predate what it now holds.
            withheld, leave = self._check_approval_settings(proposal, mr, run,
                                                            head_moved=head != run.first_head)
        # Set when the run first looked, on the head it still has (promoter pushed nothing):
        # asking again changes nothing, and once the pipeline has passed GitLab 17 takes the
        # request as "merge now" and refuses an unapproved MR (422), the auto-merge still set.
        leave = leave or (run.first_auto_merge and mr.auto_merge and head == run.first_head
                          and mr.iid == run.first_open_iid)
        if proposal.auto_merge and withheld:
            # The forge would merge as soon as the pipeline passes, with approvals it does not
            # count or that were given for another version: a merge nobody approved.
            _warn(run, f"auto-merge not set on !{mr.iid}: {withheld}")
        elif proposal.auto_merge and not leave:
            auto_merge_problem = forge.auto_merge(mr.iid, head)
            if auto_merge_problem:
                _warn(run, auto_merge_problem)
        if run.superseded_iid is not None:
            forge.upsert_note(run.superseded_iid, SUPERSEDED_NOTE,
                              f"Superseded by !{mr.iid} (version {proposal.version}).")
        return enforced

    def _check_approval_settings(self, proposal: Proposal, mr: MergeRequest, run: _Run, *,
                                 head_moved: bool) -> tuple[str | None, bool]:
        """The forge's approval rule holds only under two project settings: say so where they
        are off, and withdraw the approvals a push of a new version left standing. Returns why
        auto-merge must not be set (approvals given for an older head may count), or None; and
        whether an auto-merge already set must be left as it is rather than set again."""
        weak = self._forge.weak_approval_settings()
        survive_push = RESET_APPROVALS_ON_PUSH in weak
        created = mr.iid != run.first_open_iid
        if not weak or (not survive_push and not created and run.pushed_over is None):
            # Approvals now reset on push, but those that survived one before still count.
            return approvals_from_weak_times(self._forge, proposal, mr, opened=created,
                                             auto_merge_set=run.first_auto_merge)
        withdrawn = run.pushed_over is not None and survive_push and \
            self._forge.reset_approvals(mr.iid)
        stale = run.pushed_over if run.pushed_over is not None and survive_push and \
            not withdrawn else None
        # New content of the same version pushed where approvals survive it: they were given
        # for the older head (no version-change withdrawal applies to it).
        repushed = survive_push and head_moved and not created and run.pushed_over is None
        if created or run.pushed_over is not None or repushed:
            # Once per MR and per version pushed, not on every job that finds it unchanged
            # (which would also drop what the note says about the last push).
            self._forge.upsert_note(mr.iid, APPROVAL_SETTINGS_NOTE, weak_settings_text(
                proposal, weak, run.pushed_over if withdrawn else None, stale, repushed))
            _warn(run, f"approvals on !{mr.iid} can be bypassed: the GitLab project settings "
                  f"{setting_list(weak)} are off or unreadable; turn on \"Remove all approvals "
                  "when commits are added to the source branch\" (reset_approvals_on_push) and "
                  "\"Prevent editing approval rules in merge requests\" "
                  "(disable_overriding_approvers_per_merge_request), the latter with a project "
                  "approval rule for the target branch requiring the count")
        if stale is not None:
            return (f"approvals given for version {stale} may still count for version "
                    f"{proposal.version} and promoter could not withdraw them (that needs a "
                    "project or group access token); reviewers must approve it again"), False
        if repushed:   # (a push of a new version returned above, or withdrew its approvals)
            # GitLab aborted any auto-merge on the push; setting it again would let approvals
            # of the older head merge the new content without anyone looking at it.
            return (f"reset_approvals_on_push is off and promoter pushed a new head of "
                    f"version {proposal.version} onto this MR (new content, or its changes "
                    "onto a newer target branch), so approvals given before that push may "
                    "still count for it; reviewers must check the changes and merge it"), False
        if survive_push and not created and not withdrawn:
            # Whether this MR's approvals predate its current head is not known here. An
            # auto-merge still set is left as it is, never set again for the current head: on
            # GitLab it merges only the head it was set for (MergeService#updated_check!
            # refuses another), and GitLab's abort after promoter's push runs in the
            # background, so a later job may still see it set for the older head.
            if run.first_auto_merge:
                return None, True
            return ("reset_approvals_on_push is off, so approvals given for an earlier head "
                    "of this MR may still count; promoter sets auto-merge only on an MR it "
                    "opens or whose approvals it withdrew"), False
        return None, False

    def _upsert_mr(self, proposal: Proposal, open_mr: MergeRequest | None, run: _Run,
                   diff: dict[str, list[str]]) -> MergeRequest:
        text = f"{proposal.description.rstrip()}\n\n{changes_section(diff)}"
        description = with_marker(text, proposal.name, proposal.env, proposal.version)
        if open_mr is None:
            return self._forge.create_mr(proposal, description)
        # Only the labels promoter sets are its to change: a reviewer's stay, and differ from
        # the proposal's without the MR being out of date.
        ours = {label for label in open_mr.labels if promoter_label(label)}
        wanted = set(proposal.labels)
        if (open_mr.title.strip(), _normal(open_mr.description), ours) == (
                proposal.title.strip(), _normal(description), wanted):
            return open_mr
        run.changed = True
        return self._forge.update_mr(open_mr.iid, proposal.title, description,
                                     add_labels=[label for label in proposal.labels
                                                 if label not in open_mr.labels],
                                     remove_labels=sorted(ours - wanted))

    def _closed_by_human(self, newest: MergeRequest, version: str) -> bool:
        """The newest MR of the branch is this version's, closed, and not by promoter: not
        titled as promoter closes MRs, or closed by another user than promoter's (a reviewer
        who retitled it so). GC's withdrawn MR too is promoter's close here (the hook and the
        sweep record it, which is what ``closed_by_promoter`` leaves out)."""
        if newest.state != "closed" or newest.version != version:
            return False
        if not newest.title.endswith((SUPERSEDED_SUFFIX, WITHDRAWN_SUFFIX)):
            return True
        own = self._forge.own_username()
        return own is not None and newest.closed_by != own

    def _close_superseded(self, old: MergeRequest, proposal: Proposal, run: _Run) -> None:
        run.superseded_iid = old.iid
        self._forge.upsert_note(old.iid, SUPERSEDED_NOTE,
                                f"Superseded by version {proposal.version}; promoter closes "
                                "this merge request and opens a new one.")
        title = old.title if old.title.endswith(SUPERSEDED_SUFFIX) else \
            old.title + SUPERSEDED_SUFFIX
        self._forge.close_mr(old.iid, title)
        self._forge.delete_branch(proposal.branch)

    def _result(self, outcome: Outcome, mr: MergeRequest | None, head: str | None, run: _Run,
                *, enforced: bool = True, landed_by: MergeRequest | None = None,
                ) -> ProposalResult:
        return ProposalResult(
            outcome=outcome, merge_request=mr, head_sha=head, landed_by=landed_by,
            commit_created=head is not None and head != run.first_head and run.changed,
            superseded_iid=run.superseded_iid, withdrawn_iid=run.withdrawn_iid,
            approvals_enforced=enforced,
            warnings=tuple(run.warnings), changed_paths=run.changed_paths)


def _iid(mr: MergeRequest | None) -> int | None:
    return mr.iid if mr else None


def _normal(text: str) -> str:
    """Text as a forge may store it (line endings, outer whitespace), for comparisons."""
    return text.replace("\r\n", "\n").strip()


def _warn(run: _Run, message: str) -> None:
    if message not in run.warnings:
        run.warnings.append(message)


def _open(mrs: Iterable[MergeRequest]) -> MergeRequest | None:
    return next((mr for mr in mrs if mr.state == "opened"), None)
