"""The stand-in's merge requests, notes, approvals and pipelines, in GitLab's JSON shapes."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.gitlab.standin.gitrepo import GitRepo

PROJECT_ID = 42


@dataclass(frozen=True)
class Profile:
    """Which GitLab the stand-in plays (see tests/gitlab/recorded/PROVENANCE.md).

    ``edition``: ``ce`` (Community Edition / Free: no approval-rule routes, the CE approvals
    entity) or ``ee`` (Premium: rules, ``approvals_required``/``approvals_left``).
    ``merge_api``: how ``PUT …/merge`` answers, as lib/api/merge_requests.rb of that era:
    ``17`` (17.x: auto-merge "when checks pass" is accepted while checks are pending, 405/422),
    ``pre17`` (14-16: auto-merge only while a pipeline runs and only on an approvable MR,
    405/422), ``legacy`` (10/11: 405/406). Every era checks the SHA (409) after mergeability.
    """

    edition: str = "ee"
    merge_api: str = "17"

    @property
    def name(self) -> str:
        return f"{self.edition}-{self.merge_api}"


# The profiles the lifecycle tests run on; ``legacy`` is exercised by tests/gitlab/test_versions.
PROFILES = {p.name: p for p in (Profile("ee", "17"), Profile("ce", "17"),
                                Profile("ee", "pre17"), Profile("ce", "pre17"))}
LEGACY = Profile("ee", "legacy")
ALL_PROFILES = {**PROFILES, LEGACY.name: LEGACY}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class User:
    id: int
    username: str

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "name": self.username.title(),
                "state": "active", "web_url": f"https://gitlab.example.test/{self.username}",
                "avatar_url": f"https://gitlab.example.test/avatar/{self.id}.png"}


@dataclass
class Mr:
    id: int
    iid: int
    source_branch: str
    target_branch: str
    title: str
    description: str
    labels: list[str]
    author: User
    state: str = "opened"
    sha: str | None = None                 # kept once the MR is closed or merged
    remove_source_branch: bool = False
    auto_merge: bool = False
    auto_merge_sha: str | None = None      # merge_params["sha"]: the head auto-merge was set for
    merge_commit_sha: str | None = None
    squash_commit_sha: str | None = None
    approved_by: list[User] = field(default_factory=list)
    approved_at: list[str] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    merged_at: str | None = None
    closed_at: str | None = None
    closed_by: User | None = None          # who closed it (the API's closed_by; null if open)
    checking_left: int = 0                 # reads left before GitLab's mergeability check ends
    merging_left: int = 0                  # reads left in state "locked" while a merge runs
    # The project the source branch lives in: a fork's id for an MR from a fork, which GitLab
    # lists among the target project's MRs (doc/api/merge_requests.md: "In the case of a merge
    # request from a fork, target_project_id and project_id are the same and
    # source_project_id is the fork project's ID"). Its head is ``sha``, the fork's commit.
    source_project_id: int = PROJECT_ID
    # The project the MR is in (its iid is numbered there): the stand-in's.
    target_project_id: int = PROJECT_ID

    @property
    def from_fork(self) -> bool:
        return self.source_project_id != self.target_project_id

    # EE ApprovalState (ee/app/models/approval_state.rb, see PROVENANCE.md): over regular
    # rules, approvals_required and approvals_left are sums of each rule's; every approval
    # counts for each of the stand-in's rules (they name no approvers).
    def approvals_required(self) -> int:
        return sum(int(rule["approvals_required"]) for rule in self.rules)

    def approvals_left(self) -> int:
        return sum(max(0, int(rule["approvals_required"]) - len(self.approved_by))
                   for rule in self.rules)


class Project:
    def __init__(self, repo: GitRepo, path: str, base_url: str,
                 project_id: int = PROJECT_ID) -> None:
        self.id = project_id   # GitLab's numeric id: iids are numbered per project
        self.repo = repo
        self.path = path
        self.base_url = base_url
        self.mrs: dict[int, Mr] = {}
        self._ids = itertools.count(1000)
        # EE's project approval settings (``GET /projects/:id/approvals``, the ApprovalSettings
        # entity), as a new project has them: approvals reset on push, MR rules editable.
        self.approval_settings: dict[str, Any] = {
            "approvers": [], "approver_groups": [], "approvals_before_merge": 0,
            "reset_approvals_on_push": True, "selective_code_owner_removals": False,
            "disable_overriding_approvers_per_merge_request": False,
            "merge_requests_author_approval": False,
            "merge_requests_disable_committers_approval": False,
            "require_password_to_approve": False, "require_reauthentication_to_approve": False}
        # Project-level approval rules; a new MR starts with a copy of each (``source_rule``).
        self.approval_rules: list[dict[str, Any]] = []

    def next_id(self) -> int:
        return next(self._ids)

    def json(self) -> dict[str, Any]:
        short = self.path.split("/")[-1]
        return {"id": self.id, "description": None, "path_with_namespace": self.path,
                "name": short, "name_with_namespace": " / ".join(self.path.split("/")),
                "path": short, "created_at": "2026-01-01T00:00:00.000Z",
                "default_branch": self.repo.default_branch,
                "web_url": f"{self.base_url}/{self.path}", "visibility": "private"}

    def head_sha(self, mr: Mr) -> str | None:
        if mr.state == "opened" and not mr.from_fork:   # a fork's branch is not in this repo
            return self.repo.head(mr.source_branch) or mr.sha
        return mr.sha

    def state(self, mr: Mr) -> str:
        return "locked" if mr.merging_left else mr.state

    def pipeline_active(self, mr: Mr) -> bool:
        pipeline = mr.pipelines[-1] if mr.pipelines else None
        return bool(pipeline and pipeline["status"] in ("created", "pending", "running"))

    def pipeline_status(self, mr: Mr) -> str | None:
        return mr.pipelines[-1]["status"] if mr.pipelines else None

    def detailed_status(self, mr: Mr) -> str:
        if mr.state != "opened" or mr.merging_left:
            return "not_open"
        if mr.checking_left:
            return "checking"
        pipeline = mr.pipelines[-1] if mr.pipelines else None
        if pipeline and pipeline["status"] in ("pending", "running"):
            return "ci_still_running"
        if pipeline and pipeline["status"] != "success":
            return "ci_must_pass"
        if mr.approvals_left():
            return "not_approved"
        return "mergeable"

    def mr_json(self, mr: Mr) -> dict[str, Any]:
        head = self.head_sha(mr)
        base = self.repo.head(mr.target_branch)
        pipeline = mr.pipelines[-1] if mr.pipelines else None
        return {
            "id": mr.id, "iid": mr.iid, "project_id": self.id, "title": mr.title,
            "description": mr.description, "state": self.state(mr),
            "source_branch": mr.source_branch, "target_branch": mr.target_branch,
            "source_project_id": mr.source_project_id, "target_project_id": self.id,
            "labels": list(mr.labels), "author": mr.author.json(), "reviewers": [],
            "assignee": None, "assignees": [], "milestone": None, "upvotes": 0, "downvotes": 0,
            "draft": False, "work_in_progress": False, "sha": head,
            "merge_status": "can_be_merged" if mr.state == "opened" else "cannot_be_merged",
            "detailed_merge_status": self.detailed_status(mr),
            "merge_when_pipeline_succeeds": mr.auto_merge,
            "merge_commit_sha": mr.merge_commit_sha,
            "squash_commit_sha": mr.squash_commit_sha, "squash": mr.squash_commit_sha is not None,
            "should_remove_source_branch": mr.remove_source_branch,
            "force_remove_source_branch": mr.remove_source_branch,
            "web_url": f"{self.base_url}/{self.path}/-/merge_requests/{mr.iid}",
            "references": {"short": f"!{mr.iid}", "relative": f"!{mr.iid}",
                           "full": f"{self.path}!{mr.iid}"},
            "head_pipeline": dict(pipeline) if pipeline else None,
            "diff_refs": {"base_sha": base, "head_sha": head, "start_sha": base},
            "has_conflicts": False, "merged_at": mr.merged_at, "closed_at": mr.closed_at,
            "closed_by": mr.closed_by.json() if mr.closed_by else None,
            "created_at": mr.created_at, "updated_at": mr.updated_at,
            "user_notes_count": len(mr.notes),
        }

    def hook_mr(self, mr: Mr, action: str, user: User) -> dict[str, Any]:
        head = self.head_sha(mr)
        commit = self.repo.commit_info(head) if head else None
        attributes = {
            "id": mr.id, "iid": mr.iid, "title": mr.title, "state": mr.state, "action": action,
            "source_branch": mr.source_branch, "target_branch": mr.target_branch,
            "source_project_id": mr.source_project_id, "target_project_id": self.id,
            "url": f"{self.base_url}/{self.path}/-/merge_requests/{mr.iid}",
            "last_commit": {"id": head, "message": commit["message"] if commit else "",
                            "title": commit["title"] if commit else ""},
            "detailed_merge_status": self.detailed_status(mr),
            "merge_commit_sha": mr.merge_commit_sha, "description": mr.description,
        }
        return {"object_kind": "merge_request", "event_type": "merge_request",
                "user": user.json(), "project": self.json(), "object_attributes": attributes,
                "labels": [{"title": label} for label in mr.labels], "changes": {}}

    def hook_pipeline(self, mr: Mr, pipeline: dict[str, Any], user: User) -> dict[str, Any]:
        return {"object_kind": "pipeline", "user": user.json(), "project": self.json(),
                "object_attributes": {"id": pipeline["id"], "ref": pipeline["ref"],
                                      "sha": pipeline["sha"], "status": pipeline["status"],
                                      "source": "merge_request_event"},
                "merge_request": {"id": mr.id, "iid": mr.iid, "state": mr.state,
                                  "source_branch": mr.source_branch,
                                  "source_project_id": mr.source_project_id,
                                  "target_branch": mr.target_branch,
                                  "target_project_id": self.id,
                                  "url": f"{self.base_url}/{self.path}/-/merge_requests/{mr.iid}"}}
