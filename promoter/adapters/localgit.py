"""The embedded git provider: real git branches on a configured remote, MRs in SQLite.

With no GitLab configured, promoter still opens "merge requests": it pushes the branch
``promote/<name>/<env>`` to the remote (a local bare repository ``<state_dir>/gitops.git`` by
default), records the MR in ``<state_dir>/state.db``, and ``promoter mr approve|merge|close``
stand in for the reviewers. ``merge`` makes a real merge commit on the remote's target branch;
while it does, the MR is ``locked`` (as GitLab shows it), so a concurrent ``close`` is refused.
The lifecycle (core.proposal) is the very one GitLab runs.

Here promoter is the forge, so ``approve`` and ``merge`` refuse an MR whose head is not the
commit promoter pushed (``PushedHeads``; someone else pushed to its branch): promoter does not
deploy what it did not write and check. A merge or close that settles such a head anyway (a
close; a merge locked before promoter refused them) is announced with ``pushed_sha`` set, so
it is recorded as the foreign outcome it is (``mr.merge_foreign``, ``merged_unverified``), as
the GitLab hook records it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from promoter.adapters.local_mrs import LocalMrStore
from promoter.adapters.localgit_forge import LocalForge
from promoter.adapters.localgit_repo import LocalRepo
from promoter.core.mr_events import SETTLING, MergeRequestEvent, promotion_key
from promoter.core.proposal import ProposalFlow
from promoter.errors import UserError
from promoter.ports.git import MergeRequest, Proposal, ProposalResult, branch_for, texts
from promoter.settings import Settings
from promoter.state.db import StateDB
from promoter.state.pushed_heads import PushedHeads

LOCAL_PROJECT_ID = 0
# A merge holds its MR locked for the seconds its push takes. Older, the lock was left by a
# merge that stopped before landing (killed): the next command on the MR opens it again.
STALE_LOCK_SECONDS = 300.0
OnEvent = Callable[[MergeRequestEvent], None]


class LocalGitProvider:
    """``GitProvider`` plus the reviewer's side: approve, merge, close."""

    def __init__(self, forge: LocalForge, *, supersede: bool = False,
                 on_event: OnEvent | None = None, attempts: int = 3,
                 sleep: Callable[[float], None] = time.sleep,
                 pushes: PushedHeads | None = None) -> None:
        self.forge = forge
        self._on_event = on_event
        self._pushes = pushes
        self._flow = ProposalFlow(forge, supersede=supersede, attempts=attempts,
                                  backoff_seconds=0.2, sleep=sleep,
                                  pushed_head=lambda iid: pushes.pushed_sha(LOCAL_PROJECT_ID, iid)
                                  if pushes is not None else None)

    def propose(self, proposal: Proposal) -> ProposalResult:
        for mr in self.forge.merge_requests(proposal.branch):
            if mr.state == "locked":  # a merge left unrecorded would refuse the new MR
                with contextlib.suppress(UserError):
                    self._settle_lock(mr)
        result = self._flow.propose(proposal)
        if self._pushes:  # the same record of pushed heads GitLab's provider keeps
            self._pushes.record_proposal(LOCAL_PROJECT_ID, proposal, result)
        if result.merge_request and result.merge_request.state == "opened":
            self._auto_merge_if_ready(result.merge_request.iid, "promoter")
            merged = self.get(result.merge_request.iid)
            if merged.state == "merged":
                return dataclasses.replace(result, merge_request=merged)
        return result

    def withdraw(self, branch: str, reason: str) -> MergeRequest | None:
        return self._flow.withdraw(branch, reason)

    def get(self, iid: int) -> MergeRequest:
        return self.forge.get(iid)

    def own_username(self) -> None:
        return self.forge.own_username()

    def find(self, name: str, env: str) -> MergeRequest | None:
        found = self.forge.merge_requests(branch_for(name, env))
        return found[0] if found else None

    def diff(self, iid: int) -> str:
        """The MR's change as `git diff` shows it (target branch ... MR head)."""
        mr = self.get(iid)
        if not mr.head_sha:
            return ""
        self.forge.repo.fetch()
        target = f"refs/remotes/origin/{mr.target_branch}"
        return self.forge.repo.git("diff", f"{target}...{mr.head_sha}")

    def open_merge_request(self, branch: str) -> MergeRequest | None:
        return self._flow.open_mr(branch)

    def files(self, prefix: str, ref: str) -> dict[str, str]:
        self.forge.repo.fetch()  # read the remote's branch as it is now, as GitLab's API does
        return texts(self.forge.read_files(ref, [], [prefix]))

    def paths(self, prefix: str, ref: str) -> frozenset[str] | None:
        self.forge.repo.fetch()
        return self.forge.list_files(ref, prefix)

    def read_many(self, paths: Sequence[str], ref: str) -> dict[str, str]:
        self.forge.repo.fetch()
        return texts(self.forge.read_files(ref, list(paths), []))

    def read(self, path: str, ref: str) -> str | None:
        return self.read_many([path], ref).get(path)

    def list_mrs(self, state: str = "opened") -> list[MergeRequest]:
        self.forge.repo.fetch()
        return [self.forge.to_mr(r) for r in self.forge.store.find(state=state)]

    def notes(self, iid: int) -> list[str]:
        return [body for _, body in self.forge.store.notes(iid)]

    def approve(self, iid: int, user: str, sha: str | None = None) -> MergeRequest:
        mr = self._open(iid)
        if sha and sha != mr.head_sha:
            raise UserError(f"!{iid} head is {mr.head_sha}, not {sha}; review the new commit")
        head = self._promoters_head(mr, "approved")
        if not self.forge.store.add_approval(iid, user, head):
            raise UserError(f"{user} already approved !{iid}")
        approved = self.get(iid)
        action = "approved" if len(approved.approved_by) >= approved.approvals_required \
            else "approval"
        self._emit(approved, action, user)
        self._auto_merge_if_ready(iid, user)
        return self.get(iid)

    def merge(self, iid: int, user: str, sha: str | None = None) -> MergeRequest:
        mr = self._open(iid)
        if mr.head_sha is None or (sha and sha != mr.head_sha):
            raise UserError(f"!{iid} head moved (now {mr.head_sha}); review it and merge again")
        self._promoters_head(mr, "merged")
        missing = mr.approvals_required - len(mr.approved_by)
        if missing > 0:
            raise UserError(f"!{iid} needs {missing} more approval(s) before it can be merged",
                            hint=f"promoter mr approve {iid} --user NAME")
        # Claimed before the target branch moves: a `mr close` running meanwhile finds it
        # locked (GitLab's state during a merge) and is refused instead of reporting "closed".
        if not self.forge.store.transition(iid, "opened", "locked", sha=mr.head_sha):
            raise self._moved_meanwhile(iid)
        try:
            merged = self._land(mr, mr.head_sha)
        except BaseException:
            # Nothing landed: open again, or the MR would stay locked for good.
            self.forge.store.transition(iid, "locked", "opened")
            raise
        self._record_merge(mr, merged, user)
        return self.get(iid)

    def _record_merge(self, mr: MergeRequest, merge_commit: str, user: str) -> None:
        """Record a merge that landed and announce it, unless another command (one that
        found the lock left behind) has already done so."""
        if self.forge.store.transition(mr.iid, "locked", "merged",
                                       merge_commit_sha=merge_commit):
            self.forge.repo.delete(mr.source_branch)
            self._emit(self.get(mr.iid), "merge", user)

    def _settle_lock(self, mr: MergeRequest) -> MergeRequest:
        """A locked MR as it really stands. A merge that landed but was never recorded (its
        last write failed, or it was killed after the push) is recorded now, as that merge
        would have, and refused to the caller; a lock older than STALE_LOCK_SECONDS without
        a landed merge is opened again; anything else is a merge still running."""
        repo = self.forge.repo
        repo.fetch()
        target = repo.head(mr.target_branch)
        if mr.head_sha and target and repo.is_ancestor(mr.head_sha, target):
            merged = repo.merge_commit_of(mr.head_sha, target) or target
            self._record_merge(mr, merged, "promoter")
            raise UserError(f"!{mr.iid} was merged (its merge is recorded now)")
        record = self.forge.store.get(mr.iid)
        if record and time.time() - float(record["updated_at"]) >= STALE_LOCK_SECONDS and \
                self.forge.store.transition(mr.iid, "locked", "opened"):
            return self.get(mr.iid)
        raise _being_merged(mr.iid)

    def _land(self, mr: MergeRequest, head: str) -> str:
        """Merge ``head`` into ``mr``'s target branch on the remote; the merge commit."""
        repo = self.forge.repo
        repo.fetch()
        target = repo.head(mr.target_branch)
        if target is None:
            raise UserError(f"the remote has no target branch {mr.target_branch!r}")
        message = (f"Merge branch '{mr.source_branch}' into '{mr.target_branch}'\n\n"
                   f"{mr.title}\n\nSee merge request !{mr.iid}\n")
        merged = repo.merge_commit(target, head, message)
        repo.push(merged, mr.target_branch, target)
        return merged

    def close(self, iid: int, user: str) -> MergeRequest:
        mr = self._open(iid)
        if not self.forge.store.transition(iid, "opened", "closed", sha=mr.head_sha):
            raise self._moved_meanwhile(iid)
        result = self.get(iid)
        self._emit(result, "close", user)
        return result

    def _moved_meanwhile(self, iid: int) -> UserError:
        """The error for losing a race: the MR left "opened" after this command read it."""
        state = self.get(iid).state
        return _being_merged(iid) if state == "locked" else \
            UserError(f"!{iid} was {state} meanwhile")

    def pushed_sha(self, iid: int) -> str | None:
        """The head promoter pushed for MR ``iid`` (None: none recorded)."""
        return self._pushes.pushed_sha(LOCAL_PROJECT_ID, iid) if self._pushes else None

    def _promoters_head(self, mr: MergeRequest, verb: str) -> str:
        """``mr``'s head, which must be the commit promoter pushed: a head someone else pushed
        is refused (naming both commits), as is an MR without a head."""
        if mr.head_sha is None:
            raise UserError(f"!{mr.iid} has no head: its branch {mr.source_branch} is gone")
        pushed = self.pushed_sha(mr.iid)
        if pushed is not None and pushed != mr.head_sha:
            raise UserError(
                f"!{mr.iid} head {mr.head_sha} is not the commit promoter pushed ({pushed}): "
                f"someone else pushed to {mr.source_branch}, and a head promoter did not "
                f"write and check is not {verb} here",
                hint=f"put promoter's commit back (git push --force <remote> "
                     f"{pushed}:{mr.source_branch}) or close the MR (promoter mr close "
                     f"{mr.iid})")
        return mr.head_sha

    def _open(self, iid: int) -> MergeRequest:
        mr = self.get(iid)
        if mr.state == "locked":
            mr = self._settle_lock(mr)
        if mr.state != "opened":
            raise UserError(f"!{iid} is {mr.state}, not open")
        return mr

    def _auto_merge_if_ready(self, iid: int, user: str) -> None:
        record = self.forge.store.get(iid)
        mr = self.get(iid)
        if (record and record["auto_merge_sha"] and record["auto_merge_sha"] == mr.head_sha
                and mr.state == "opened" and len(mr.approved_by) >= mr.approvals_required):
            self.merge(iid, user, sha=mr.head_sha)

    def _emit(self, mr: MergeRequest, action: str, user: str) -> None:
        if self._on_event is None:
            return
        key = promotion_key(mr.source_branch)
        # A settled head promoter did not push is announced as such (``foreign_head``), as
        # the GitLab hook does: recorded as a foreign outcome, never as promoter's.
        pushed = self.pushed_sha(mr.iid) if action in SETTLING else None
        self._on_event(MergeRequestEvent(
            action=action, project_id=LOCAL_PROJECT_ID, project_path=self.forge.repo.stored_remote,
            iid=mr.iid, state=mr.state, source_branch=mr.source_branch,
            target_branch=mr.target_branch, head_sha=mr.head_sha, url=mr.url, user=user,
            name=key[0] if key else None, env=key[1] if key else None,
            merge_commit_sha=mr.merge_commit_sha,
            pushed_sha=pushed if pushed != mr.head_sha else None))


def _being_merged(iid: int) -> UserError:
    return UserError(f"!{iid} is being merged by another command",
                     hint=f"see how it ended with `promoter mr show {iid}`")


def from_settings(settings: Settings, on_event: OnEvent | None = None, *,
                  state: StateDB | None = None) -> LocalGitProvider:
    """``state``: the state database (the composition root passes the configured one)."""
    state_dir = Path(settings.state_dir)
    # First: opening it creates the state directory owner-only.
    state = state or StateDB.open(state_dir)
    repo = LocalRepo.in_state_dir(state_dir, settings.git.remote, settings.git.target_branch,
                                  initial_files=lambda: _scaffolding(settings))
    forge = LocalForge(repo, LocalMrStore(state))
    return LocalGitProvider(forge, supersede=settings.git.newer_version == "supersede",
                            on_event=on_event, pushes=PushedHeads(state))


def _scaffolding(settings: Settings) -> dict[str, str]:
    """The first commit's GitOps scaffolding; none when promoter.yaml cannot make it yet (no
    image.repository or image.verification_key): `promoter gitops init --propose` adds it."""
    from promoter.errors import ConfigError
    from promoter.gitops.scaffold import plan

    try:
        return plan(settings, {}).files
    except ConfigError:
        return {}
