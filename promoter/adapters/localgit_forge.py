"""The local provider's forge: what ``core.proposal`` asks of GitLab, on a git remote and the
MR records of ``adapters.local_mrs``.

An open MR's head is its branch on the remote, whoever pushed it. Its approvals count only
for the head they were given for (``LocalMrStore``: the record's ``sha``), so a head that
moved since they were given, by promoter's commit or anyone else's push, has none (GitLab's
reset of approvals on push).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promoter.adapters.local_mrs import LocalMrStore, OpenMergeRequestExists
from promoter.adapters.localgit_repo import LocalRepo
from promoter.core.mr_text import note_body, note_slug
from promoter.errors import NotFoundError, TransientError, UserError
from promoter.ports.forge import Action
from promoter.ports.git import FileContent, MergeRequest, Proposal


class LocalForge:
    def __init__(self, repo: LocalRepo, store: LocalMrStore) -> None:
        self.repo = repo
        self.store = store

    def merge_requests(self, source_branch: str) -> list[MergeRequest]:
        self.repo.fetch()
        return [self.to_mr(r) for r in self.store.find(source_branch=source_branch)]

    def to_mr(self, record: dict[str, Any]) -> MergeRequest:
        opened = record["state"] == "opened"
        head = self.repo.head(record["source_branch"]) if opened else None
        # An open MR's approvals are its head's: given for another head, they do not count.
        approved_by = tuple(record["approved_by"]) if not opened or (
            head is not None and head == record["sha"]) else ()
        return MergeRequest(
            iid=record["iid"], id=record["iid"], url=f"local:!{record['iid']}",
            state=record["state"], source_branch=record["source_branch"],
            target_branch=record["target_branch"], title=record["title"],
            head_sha=head or record["sha"], description=record["description"],
            labels=tuple(record["labels"]), version=record["version"],
            approvals_required=record["approvals_required"],
            approved_by=approved_by, merge_commit_sha=record["merge_commit_sha"],
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
        if self.store.get(iid) is None:
            # As GitLab answers 404 for an MR it does not hold (a ledger row from another
            # provider): not the state database's refusal of a note for no MR.
            raise NotFoundError(f"merge request !{iid} does not exist",
                                hint="list them with `promoter mr list`")
        text = note_body(heading, body)
        mine = self._own_note(iid, heading)
        if mine is None:
            self.store.add_note(iid, text)
        elif mine[1] != text:
            self.store.edit_note(mine[0], text)

    def own_note(self, iid: int, heading: str) -> str | None:
        mine = self._own_note(iid, heading)
        return None if mine is None else mine[1]

    def _own_note(self, iid: int, heading: str) -> tuple[int, str] | None:
        slug = note_slug(note_body(heading, ""))
        return next(((nid, b) for nid, b in self.store.notes(iid) if note_slug(b) == slug),
                    None)

    def approved_by(self, iid: int) -> tuple[str, ...]:
        return self.get(iid).approved_by

    def require_approvals(self, iid: int, count: int, user_ids: Sequence[int] = (),
                          group_ids: Sequence[int] = ()) -> bool:
        # Local review has no user or group ids: the count is what `promoter mr merge` checks.
        self.store.update(iid, approvals_required=count)
        return True

    def weak_approval_settings(self) -> tuple[str, ...]:
        # Approvals count only for the head they were given for (``to_mr``), every commit
        # resets them (``commit``), and only promoter sets the count.
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
