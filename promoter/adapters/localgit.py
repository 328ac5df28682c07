"""The embedded git provider: real git branches on a configured remote, MRs in SQLite.

With no GitLab configured, promoter still opens "merge requests": it pushes the branch
``promote/<name>/<env>`` to the remote (a local bare repository ``<state_dir>/gitops.git`` by
default), records the MR in ``<state_dir>/state.db``, and ``promoter mr approve|merge|close``
stand in for the reviewers. ``merge`` makes a real merge commit on the remote's target branch;
while it does, the MR is ``locked`` (as GitLab shows it), so a concurrent ``close`` is refused.
The lifecycle (core.proposal) is the very one GitLab runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from promoter.adapters.local_mrs import LocalMrStore, OpenMergeRequestExists
from promoter.adapters.localgit_repo import LocalRepo
from promoter.core.mr_events import MergeRequestEvent, promotion_key
from promoter.core.mr_text import note_body, note_slug
from promoter.core.proposal import ProposalFlow
from promoter.errors import NotFoundError, TransientError, UserError
from promoter.ports.forge import Action
from promoter.ports.git import (
    FileContent,
    MergeRequest,
    Proposal,
    ProposalResult,
    branch_for,
    texts,
)
from promoter.settings import Settings
from promoter.state.db import StateDB
from promoter.state.pushed_heads import PushedHeads

LOCAL_PROJECT_ID = 0
# A merge holds its MR locked for the seconds its push takes. Older, the lock was left by a
# merge that stopped before landing (killed): the next command on the MR opens it again.
STALE_LOCK_SECONDS = 300.0
OnEvent = Callable[[MergeRequestEvent], None]


class LocalForge:
    def __init__(self, repo: LocalRepo, store: LocalMrStore) -> None:
        self.repo = repo
        self.store = store

    def merge_requests(self, source_branch: str) -> list[MergeRequest]:
        self.repo.fetch()
        return [self.to_mr(r) for r in self.store.find(source_branch=source_branch)]

    def to_mr(self, record: dict[str, Any]) -> MergeRequest:
        head = self.repo.head(record["source_branch"]) if record["state"] == "opened" else None
        return MergeRequest(
            iid=record["iid"], id=record["iid"], url=f"local:!{record['iid']}",
            state=record["state"], source_branch=record["source_branch"],
            target_branch=record["target_branch"], title=record["title"],
            head_sha=head or record["sha"], description=record["description"],
            labels=tuple(record["labels"]), version=record["version"],
            approvals_required=record["approvals_required"],
            approved_by=tuple(record["approved_by"]), merge_commit_sha=record["merge_commit_sha"],
            auto_merge=record["auto_merge_sha"] is not None)

    def branch_head(self, branch: str) -> str | None:
        self.repo.fetch()
        return self.repo.head(branch)

    def is_ancestor(self, commit: str, revision: str) -> bool:
        self.repo.fetch()   # Argo CD read the remote: the revision may be newer than our clone
        return self.repo.is_ancestor(commit, revision)

    def commit_message(self, sha: str) -> str:
        return self.repo.message(sha)

    def read_files(self, ref: str, paths: Sequence[str],
                   prefixes: Sequence[str]) -> dict[str, FileContent]:
        return self.repo.read(ref, paths, prefixes)

    def list_files(self, ref: str, prefix: str) -> frozenset[str] | None:
        return self.repo.list_files(ref, prefix)

    def commit(self, branch: str, start_branch: str, actions: Sequence[Action],
               message: str, expected_head: str | None) -> str:
        self.repo.fetch()
        base = self.repo.head(start_branch)
        if base is None:
            raise UserError(f"the git remote has no branch {start_branch!r}",
                            hint="set git.target_branch to the remote's main branch")
        sha = self.repo.commit(base, actions, message)
        self.repo.push(sha, branch, expected_head)  # refused if the branch moved meanwhile
        self.store.reset_approvals(branch)  # new commits void approvals (GitLab's reset)
        return sha

    def delete_branch(self, branch: str) -> None:
        self.repo.delete(branch)

    def create_mr(self, proposal: Proposal, description: str) -> MergeRequest:
        try:
            iid = self.store.create(proposal.branch, proposal.target_branch, proposal.title,
                                    description, proposal.labels)
        except OpenMergeRequestExists:
            raise TransientError(f"an open MR already exists for {proposal.branch}") from None
        return self.get(iid)

    def update_mr(self, iid: int, title: str, description: str,
                  add_labels: Sequence[str] = (),
                  remove_labels: Sequence[str] = ()) -> MergeRequest:
        kept = [label for label in self.get(iid).labels if label not in remove_labels]
        labels = kept + [label for label in add_labels if label not in kept]
        self.store.update(iid, title=title, description=description, labels=labels)
        return self.get(iid)

    def own_username(self) -> None:
        """No accounts: `promoter mr close` cannot retitle, so a title tells promoter's closes."""
        return None

    def close_mr(self, iid: int, title: str) -> None:
        if not self.store.transition(iid, "opened", "closed", title=title,
                                     sha=self.get(iid).head_sha):
            # Merged (or being merged) since the flow read it: look again, as on GitLab.
            raise TransientError(f"merge request !{iid} changed state while being closed")

    def upsert_note(self, iid: int, heading: str, body: str) -> None:
        text = note_body(heading, body)
        mine = next(((nid, b) for nid, b in self.store.notes(iid)
                     if note_slug(b) == note_slug(text)), None)
        if mine is None:
            self.store.add_note(iid, text)
        elif mine[1] != text:
            self.store.edit_note(mine[0], text)

    def require_approvals(self, iid: int, count: int, user_ids: Sequence[int] = (),
                          group_ids: Sequence[int] = ()) -> bool:
        # Local review has no user or group ids: the count is what `promoter mr merge` checks.
        self.store.update(iid, approvals_required=count)
        return True

    def weak_approval_settings(self) -> tuple[str, ...]:
        # Every commit resets approvals (``commit``) and only promoter sets the count.
        return ()

    def reset_approvals(self, iid: int) -> bool:
        self.store.reset_approvals(self.get(iid).source_branch)
        return True

    def auto_merge(self, iid: int, sha: str) -> str | None:
        self.store.update(iid, auto_merge_sha=sha)
        return None

    def get(self, iid: int) -> MergeRequest:
        record = self.store.get(iid)
        if record is None:
            raise NotFoundError(f"merge request !{iid} does not exist",
                                hint="list them with `promoter mr list`")
        return self.to_mr(record)


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
        if not self.forge.store.add_approval(iid, user):
            raise UserError(f"{user} already approved !{iid}")
        approved = self.get(iid)
        action = "approved" if len(approved.approved_by) >= approved.approvals_required \
            else "approval"
        self._emit(approved, action, user)
        self._auto_merge_if_ready(iid, user)
        return self.get(iid)

    def merge(self, iid: int, user: str, sha: str | None = None) -> MergeRequest:
        mr = self._open(iid)
        missing = mr.approvals_required - len(mr.approved_by)
        if missing > 0:
            raise UserError(f"!{iid} needs {missing} more approval(s) before it can be merged",
                            hint=f"promoter mr approve {iid} --user NAME")
        if mr.head_sha is None or (sha and sha != mr.head_sha):
            raise UserError(f"!{iid} head moved (now {mr.head_sha}); review it and merge again")
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
        return self.get(iid).head_sha

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
        self._on_event(MergeRequestEvent(
            action=action, project_id=LOCAL_PROJECT_ID, project_path=self.forge.repo.remote,
            iid=mr.iid, state=mr.state, source_branch=mr.source_branch,
            target_branch=mr.target_branch, head_sha=mr.head_sha, url=mr.url, user=user,
            name=key[0] if key else None, env=key[1] if key else None,
            merge_commit_sha=mr.merge_commit_sha))


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
