"""GitLab's REST API as promoter's forge: the only module that drives python-gitlab.

``GitLabForge`` maps each step of the shared lifecycle (core.proposal) to one or two REST
calls; ``GitLabProvider`` (adapters.gitlab_provider) runs that lifecycle over it. Branches are
created by the commits API itself (``start_branch`` + ``force``), so a branch always holds
exactly one promoter commit on top of the target branch.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import gitlab
import requests

from promoter.adapters import gitlab_approvals as approvals
from promoter.adapters.gitlab_automerge import set_auto_merge
from promoter.adapters.gitlab_calls import Caller, NotFound, Refused, RetryAfterMemory
from promoter.core.mr_text import marker_version, note_body, note_slug
from promoter.core.proposal import APPROVALS_NOTE
from promoter.errors import ConfigError, NotFoundError, TransientError
from promoter.ports.forge import Action
from promoter.ports.git import (
    FileContent,
    MergeRequest,
    Proposal,
    from_blob,
)

_STATED_APPROVALS = re.compile(r"requires \*\*(\d+)\*\* approval")

APPROVAL_SETTINGS_TTL = 300.0  # seconds a read of the project's approval settings is reused


class GitLabForge:
    def __init__(self, client: gitlab.Gitlab, project_path: str, caller: Caller, *,
                 merge_polls: int = 4, poll_backoff: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._gl = client
        self._call = caller
        self._merge_polls = merge_polls
        self._poll_backoff = poll_backoff
        self._sleep = sleep
        self._project_path = project_path
        self._project: Any = None
        self.clock = clock  # monotonic seconds; ages the approval settings read
        self._weak_settings: tuple[tuple[str, ...], float] | None = None   # (settings, read at)
        # The token's user: the author of promoter's notes, the closer of promoter's closes.
        self._own: dict[str, Any] | None = None

    @property
    def project(self) -> Any:
        if self._project is None:
            try:
                self._project = self._call.read("open the GitOps project",
                                                self._gl.projects.get, self._project_path)
            except NotFound:
                raise ConfigError(f"GitLab project {self._project_path!r} was not found",
                                  hint="set git.gitlab.project (PROMOTER_GITLAB_PROJECT) to the "
                                       "project's full path; check the token can see it") from None
        return self._project

    @property
    def project_id(self) -> int:
        return int(self.project.id)

    def merge_requests(self, source_branch: str) -> list[MergeRequest]:
        found = self._call.read(f"list merge requests of {source_branch}",
                                self.project.mergerequests.list, source_branch=source_branch,
                                state="all", order_by="created_at", sort="desc", get_all=True)
        # GitLab lists the MRs *into* the project, forks' among them (source_project_id the
        # fork's): a fork's branch may carry promoter's name, but only an MR from the
        # project's own branch is promoter's to update, close or merge.
        project_id = self.project_id
        mrs = sorted((to_merge_request(mr.attributes) for mr in found
                      if _from_the_project(mr.attributes, project_id)),
                     key=lambda mr: mr.iid, reverse=True)
        return [self._settled(mr) if mr.state == "locked" else mr for mr in mrs]

    def _settled(self, mr: MergeRequest) -> MergeRequest:
        """GitLab shows ``locked`` while it carries out a merge: wait for the outcome."""
        for attempt in range(self._merge_polls):
            self._sleep(self._poll_backoff * 2 ** attempt)
            mr = self._read_mr(mr.iid)
            if mr.state != "locked":
                return mr
        raise TransientError(f"merge request !{mr.iid} is being merged by GitLab (state "
                             "locked); looking again once the merge is done")

    def _read_mr(self, iid: int) -> MergeRequest:
        return to_merge_request(self._read_mr_data(iid))

    def _read_mr_data(self, iid: int) -> dict[str, Any]:
        try:
            mr = self._call.read(f"read merge request !{iid}", self.project.mergerequests.get, iid)
        except NotFound:
            raise NotFoundError(f"merge request !{iid} does not exist in "
                                f"{self._project_path}") from None
        return dict(mr.attributes)

    def get_mr(self, iid: int) -> MergeRequest:
        data = self._read_mr_data(iid)
        found = to_merge_request(data)
        mr = self._mr(iid)
        try:
            approvals = self._call.read(f"read approvals of !{iid}", mr.approvals.get)
        except (NotFound, Refused):
            return found
        answer: dict[str, Any] = approvals.attributes
        approved_by = _approved_by(answer)
        required = answer.get("approvals_required")
        if not isinstance(required, int):
            # CE/Free answer the MergeRequestApprovals entity, which has no count: the count
            # is the one promoter stated in the MR (it comes from the environment's settings).
            author = data.get("author")
            required = self._stated_approvals(
                iid, author.get("id") if isinstance(author, dict) else None)
        return dataclasses.replace(found, approvals_required=required, approved_by=approved_by)

    def counted_approvals(self, iid: int) -> tuple[int, int] | None:
        """(approvals given, approvals required) of !``iid`` where only promoter counts them:
        GitLab CE/Free, whose ApprovalService sends the ``approved`` hook on every approval
        (it has no rules, so "one approval is required"), while the environment's count is
        the one promoter stated in the MR. None on Premium: its ``approved`` hook comes only
        once approvals_left is zero, and its approvals_required (a sum over rules, which one
        approver can meet together) is not to be compared with the approvers' number.
        Failures are raised (the hook answers 5xx and GitLab delivers it again)."""
        answer: dict[str, Any] = self._call.read(f"read approvals of !{iid}",
                                                 self._mr(iid).approvals.get).attributes
        if isinstance(answer.get("approvals_required"), int):
            return None
        author = self._read_mr_data(iid).get("author")
        required = self._stated_approvals(iid, author.get("id") if isinstance(author, dict)
                                          else None)
        return len(_approved_by(answer)), required

    def _stated_approvals(self, iid: int, author_id: object) -> int:
        """The count in promoter's approvals comment (by the MR's author: promoter's token)."""
        notes = self._call.read(f"read comments of !{iid}", self._mr(iid).notes.list,
                                get_all=True)
        slug = note_slug(note_body(APPROVALS_NOTE, ""))
        for note in notes:
            written_by = getattr(note, "author", None)
            if not isinstance(written_by, dict) or written_by.get("id") != author_id:
                continue            # a copy of promoter's comment by someone else: ignored
            if note_slug(note.body) == slug:
                stated = _STATED_APPROVALS.search(note.body)
                if stated:
                    return int(stated.group(1))
        return 0

    def branch_head(self, branch: str) -> str | None:
        try:
            found = self._call.read(f"read branch {branch}", self.project.branches.get, branch)
        except NotFound:
            return None
        return str(found.commit["id"])

    def is_ancestor(self, commit: str, revision: str) -> bool:
        """The repository's merge base of the two (``GET …/repository/merge_base``): ``commit``
        is an ancestor of ``revision`` exactly when it is their merge base. GitLab answers 400
        for a ref it cannot find and 404 when the two share no history: not contained."""
        if commit == revision:
            return True
        try:
            base = self._call.read(f"find the merge base of {commit[:12]} and {revision[:12]}",
                                   self.project.repository_merge_base, [commit, revision])
        except NotFound:
            return False
        except Refused as exc:
            if exc.status == 400:
                return False
            raise
        return isinstance(base, dict) and base.get("id") == commit

    def commit_message(self, sha: str) -> str:
        commit = self._call.read(f"read commit {sha[:12]}", self.project.commits.get, sha)
        return str(commit.message)

    def read_files(self, ref: str, paths: Sequence[str],
                   prefixes: Sequence[str]) -> dict[str, FileContent]:
        wanted = set(paths)
        for prefix in prefixes:
            try:
                tree = self._call.read(f"list {prefix} on {ref}", self.project.repository_tree,
                                       path=prefix.rstrip("/"), ref=ref, recursive=True,
                                       get_all=True)
            except NotFound:
                continue
            wanted.update(item["path"] for item in tree if item["type"] == "blob")
        files: dict[str, FileContent] = {}
        for path in sorted(wanted):
            try:
                raw = self._call.read(f"read {path} on {ref}", self.project.files.raw,
                                      file_path=path, ref=ref)
            except NotFound:
                continue
            files[path] = from_blob(raw) if isinstance(raw, bytes) else str(raw)
        return files

    def list_files(self, ref: str, prefix: str) -> frozenset[str] | None:
        try:
            tree = self._call.read(f"list {prefix} on {ref}", self.project.repository_tree,
                                   path=prefix.rstrip("/"), ref=ref, recursive=True,
                                   get_all=True)
        except NotFound:
            # GitLab answers the same 404 ("Tree Not Found") for a missing path and a missing
            # ref: only the branch read tells "nothing there" from "no such branch".
            return None if self.branch_head(ref) is None else frozenset()
        return frozenset(str(item["path"]) for item in tree if item["type"] == "blob")

    def commit(self, branch: str, start_branch: str, actions: Sequence[Action],
               message: str, expected_head: str | None) -> str:
        # GitLab's commits API cannot compare-and-swap a forced branch; the flow checked the
        # head just before, which narrows (but cannot close) the window for a human push.
        data = {"branch": branch, "start_branch": start_branch, "commit_message": message,
                "actions": [_commit_action(action) for action in actions],
                "force": expected_head is not None}
        created = self._call.write(f"commit to {branch}", self.project.commits.create, data)
        return str(created.id)

    def delete_branch(self, branch: str) -> None:
        with contextlib.suppress(NotFound):  # already gone: fine
            self._call.write(f"delete branch {branch}", self.project.branches.delete, branch)

    def create_mr(self, proposal: Proposal, description: str) -> MergeRequest:
        data = {"source_branch": proposal.branch, "target_branch": proposal.target_branch,
                "title": proposal.title, "description": description,
                "labels": ",".join(proposal.labels), "remove_source_branch": True,
                "squash": False}
        created = self._call.write(f"open a merge request for {proposal.branch}",
                                   self.project.mergerequests.create, data)
        return to_merge_request(created.attributes)

    def update_mr(self, iid: int, title: str, description: str,
                  add_labels: Sequence[str] = (),
                  remove_labels: Sequence[str] = ()) -> MergeRequest:
        # Never "labels": GitLab would replace every label, a reviewer's among them.
        data = {"title": title, "description": description}
        if add_labels:
            data["add_labels"] = ",".join(add_labels)
        if remove_labels:
            data["remove_labels"] = ",".join(remove_labels)
        updated = self._call.write(f"update merge request !{iid}",
                                   self.project.mergerequests.update, iid, data)
        return to_merge_request(updated)

    def close_mr(self, iid: int, title: str) -> None:
        # Two requests, retitle first: GitLab carries out a PUT's state_event before its other
        # attributes (IssuableBaseService#update: change_state, then assign_attributes), so a
        # close sent with the new title fires its "close" hook with the old one, and the hook
        # would record promoter's own close as a reviewer's. Cut short in between, the MR stays
        # open titled "… - superseded"/"… - withdrawn": the flow's next attempt keeps such a
        # title and closes it, and a proposal of the MR's own version retitles it back.
        self._call.write(f"retitle merge request !{iid}", self.project.mergerequests.update,
                         iid, {"title": title})
        self._call.write(f"close merge request !{iid}", self.project.mergerequests.update, iid,
                         {"state_event": "close"})

    def upsert_note(self, iid: int, heading: str, body: str) -> None:
        text = note_body(heading, body)
        notes = self._mr(iid).notes
        mine = self._own_note(iid, heading)
        if mine is None:
            self._call.write(f"comment on !{iid}", notes.create, {"body": text})
        elif mine.body.strip() != text.strip():
            self._call.write(f"edit comment on !{iid}", notes.update, mine.id, {"body": text})

    def own_note(self, iid: int, heading: str) -> str | None:
        mine = self._own_note(iid, heading)
        return None if mine is None else str(mine.body)

    def _own_note(self, iid: int, heading: str) -> Any:
        existing = self._call.read(f"read comments of !{iid}", self._mr(iid).notes.list,
                                   get_all=True)
        # promoter's own comment: a reviewer's pasted copy carries the same marker (editing
        # it would be refused with 403, and what it says is not promoter's record).
        own, slug = self._own_user_id(), note_slug(note_body(heading, ""))
        return next((n for n in existing if note_slug(n.body) == slug
                     and (n.author or {}).get("id") == own), None)

    def approved_by(self, iid: int) -> tuple[str, ...]:
        return _approved_by(self._call.read(f"read approvals of !{iid}",
                                            self._mr(iid).approvals.get).attributes)

    def _own_user(self) -> dict[str, Any]:
        if self._own is None:
            user: Any = self._call.read("read the token's user", self._gl.http_get, "/user")
            self._own = {"id": int(user["id"]), "username": str(user["username"])}
        return self._own

    def _own_user_id(self) -> int:
        return int(self._own_user()["id"])

    def own_username(self) -> str:
        return str(self._own_user()["username"])

    def require_approvals(self, iid: int, count: int, user_ids: Sequence[int] = (),
                          group_ids: Sequence[int] = ()) -> bool:
        return approvals.require(self._call, self._mr(iid), iid, count, user_ids, group_ids)

    def weak_approval_settings(self) -> tuple[str, ...]:
        """The project settings that leave the ``promoter`` rule open to stale approvals or
        per-MR edits. The forge lives as long as `serve`, so the answer is read again after
        APPROVAL_SETTINGS_TTL: a maintainer's fix is seen within minutes, not at a restart."""
        now = self.clock()
        if self._weak_settings is None or \
                now - self._weak_settings[1] >= APPROVAL_SETTINGS_TTL:
            weak = approvals.weak_settings(self._call, self.project)
            approvals.warn_once(self._project_path, weak)
            self._weak_settings = (weak, now)
        return self._weak_settings[0]

    def reset_approvals(self, iid: int) -> bool:
        return approvals.reset(self._call, self._mr(iid), iid)

    def auto_merge(self, iid: int, sha: str) -> str | None:
        path = f"/projects/{self.project_id}/merge_requests/{iid}/merge"
        def merge_state() -> tuple[str, str | None]:
            mr = self._read_mr(iid)
            return mr.state, mr.detailed_merge_status

        return set_auto_merge(self._gl.http_put, self._call, path, iid, sha, merge_state,
                              polls=self._merge_polls, backoff=self._poll_backoff,
                              sleep=self._sleep)

    def _mr(self, iid: int) -> Any:
        return self.project.mergerequests.get(iid, lazy=True)


def to_merge_request(data: dict[str, Any]) -> MergeRequest:
    return MergeRequest(
        iid=int(data["iid"]), id=int(data["id"]), url=str(data.get("web_url") or ""),
        state=str(data["state"]), source_branch=str(data["source_branch"]),
        target_branch=str(data["target_branch"]), title=str(data.get("title") or ""),
        head_sha=data.get("sha"), description=str(data.get("description") or ""),
        labels=tuple(data.get("labels") or ()),
        version=marker_version(data.get("description")),
        merge_commit_sha=data.get("merge_commit_sha"),
        squash_commit_sha=data.get("squash_commit_sha"),
        detailed_merge_status=data.get("detailed_merge_status"),
        auto_merge=bool(data.get("merge_when_pipeline_succeeds")),
        closed_by=_username(data.get("closed_by")))


def _from_the_project(data: dict[str, Any], project_id: int) -> bool:
    """An MR from a branch of the project itself: ``source_project_id`` (a fork's id for a
    fork's MR, null once that fork is deleted) and ``target_project_id`` both its id."""
    return data.get("source_project_id") == project_id == data.get("target_project_id")


def _approved_by(approvals: dict[str, Any]) -> tuple[str, ...]:
    """Who approved, from an MR's approvals answer (CE's entity and EE's ApprovalState)."""
    return tuple(str(entry["user"]["username"]) for entry in approvals.get("approved_by") or ()
                 if isinstance(entry, dict) and isinstance(entry.get("user"), dict))


def _username(user: Any) -> str | None:
    """A user object's username (GitLab sends null for nobody)."""
    name = user.get("username") if isinstance(user, dict) else None
    return name if isinstance(name, str) else None


def connect(url: str, token: str, project: str, *, verify_tls: bool | str = True,
            timeout_seconds: float = 30, attempts: int = 4, backoff_seconds: float = 0.5,
            max_wait_seconds: float = 60, per_page: int | None = None) -> GitLabForge:
    memory = RetryAfterMemory()
    session = requests.Session()
    session.hooks["response"].append(memory.hook)
    client = gitlab.Gitlab(url, private_token=token, ssl_verify=verify_tls,
                           timeout=timeout_seconds, retry_transient_errors=False,
                           session=session, per_page=per_page)
    caller = Caller(memory, attempts=attempts, backoff_seconds=backoff_seconds,
                    max_wait_seconds=max_wait_seconds)
    return GitLabForge(client, project, caller, poll_backoff=backoff_seconds)


def _commit_action(action: Action) -> dict[str, str]:
    """A planned file change in the shape of GitLab's commits API: text as text, binary
    content (bytes) base64-encoded, which the API decodes before it stores the blob."""
    shaped = {"action": action.kind, "file_path": action.path}
    if isinstance(action.content, bytes):
        shaped["content"] = base64.b64encode(action.content).decode("ascii")
        shaped["encoding"] = "base64"
    elif action.content is not None:
        shaped["content"] = action.content
        shaped["encoding"] = "text"
    return shaped
