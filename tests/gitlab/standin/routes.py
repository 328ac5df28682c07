"""The endpoints promoter calls, answered the way GitLab answers them."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.gitlab.standin.gitrepo import ApiError
from tests.gitlab.standin.state import Mr, User, now

if TYPE_CHECKING:
    from tests.gitlab.standin.server import StandIn

Answer = tuple[int, Any]
P = r"/api/v4/projects/(?P<project>[^/]+)"
MR = P + r"/merge_requests/(?P<iid>\d+)"


def _bool(value: Any) -> bool:
    return value in (True, "true", "True", "1", 1)


def _labels(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def _title_fits(title: Any) -> None:
    """Issuable validates ``title, length: { maximum: 255 }`` (characters): a longer one is a
    400 with the model's validation errors."""
    if len(str(title)) > 255:
        raise ApiError(400, {"title": ["is too long (maximum is 255 characters)"]})


class Api:
    def __init__(self, standin: StandIn) -> None:
        self.s = standin
        self.project = standin.project
        self.repo = standin.repo

    def mr(self, iid: str | int) -> Mr:
        found = self.project.mrs.get(int(iid))
        if found is None:
            raise ApiError(404, "404 Merge Request Not Found")   # not_found!("Merge Request")
        return found

    # --- repository ------------------------------------------------------------------------
    def get_project(self, user: User, params: dict[str, Any]) -> Answer:
        return 200, self.project.json()

    def get_branch(self, user: User, params: dict[str, Any], branch: str) -> Answer:
        head = self.repo.head(branch)
        if head is None:
            raise ApiError(404, "404 Branch Not Found")
        commit = self.repo.commit_info(head)
        assert commit is not None
        commit["web_url"] = f"{self.project.base_url}/{self.project.path}/-/commit/{head}"
        return 200, {"name": branch, "commit": commit, "merged": False,
                     "protected": branch == self.repo.default_branch,
                     "developers_can_push": False, "developers_can_merge": False,
                     "can_push": True,
                     "default": branch == self.repo.default_branch,
                     "web_url": f"{self.project.base_url}/{self.project.path}/-/tree/{branch}"}

    def delete_branch(self, user: User, params: dict[str, Any], branch: str) -> Answer:
        if self.repo.head(branch) is None:
            raise ApiError(404, "404 Branch Not Found")
        self.repo.delete_branch(branch)
        return 204, b""

    def tree(self, user: User, params: dict[str, Any]) -> Answer:
        ref = str(params.get("ref") or self.repo.default_branch)
        items = self.repo.tree(ref, str(params.get("path") or "").strip("/"),
                               _bool(params.get("recursive")))
        if items is None:
            raise ApiError(404, "404 Tree Not Found")
        return 200, items

    def file_raw(self, user: User, params: dict[str, Any], path: str) -> Answer:
        content = self.repo.file(str(params.get("ref") or self.repo.default_branch), path)
        if content is None:
            raise ApiError(404, "404 File Not Found")
        return 200, content

    def file(self, user: User, params: dict[str, Any], path: str) -> Answer:
        ref = str(params.get("ref") or self.repo.default_branch)
        content = self.repo.file(ref, path)
        if content is None:
            raise ApiError(404, "404 File Not Found")
        return 200, {"file_name": path.rsplit("/", 1)[-1], "file_path": path,
                     "size": len(content), "encoding": "base64", "ref": ref,
                     "content": base64.b64encode(content).decode()}

    def get_commit(self, user: User, params: dict[str, Any], sha: str) -> Answer:
        info = self.repo.commit_info(sha)
        if info is None:
            raise ApiError(404, "404 Commit Not Found")
        info["web_url"] = f"{self.project.base_url}/{self.project.path}/-/commit/{info['id']}"
        return 200, info

    def merge_base(self, user: User, params: dict[str, Any]) -> Answer:
        """GitLab's lib/api/repositories.rb: fewer than two refs 400, an unknown ref 400 naming
        it, no common ancestor 404 "Merge Base Not Found", else the Commit entity."""
        refs = params.get("refs")
        refs = refs if isinstance(refs, list) else [refs] if refs else []
        if len(refs) < 2:
            raise ApiError(400, "Provide at least 2 refs")
        unknown = [ref for ref in refs if self.repo.commit_info(ref) is None]
        if unknown:
            noun = "ref" if len(unknown) == 1 else "refs"
            raise ApiError(400, f"Could not find {noun}: {', '.join(unknown)}")
        base = self.repo.merge_base(refs)
        if base is None:
            raise ApiError(404, "404 Merge Base Not Found")
        return self.get_commit(user, params, base)

    def create_commit(self, user: User, params: dict[str, Any]) -> Answer:
        branch = str(params.get("branch") or "")
        if not branch or "commit_message" not in params or "actions" not in params:
            raise ApiError(400, "branch, commit_message, actions are missing", key="error")
        start = params.get("start_branch") or params.get("start_sha")
        head = self.repo.head(branch)
        force = _bool(params.get("force"))
        if head is not None and start and start != branch and not force:
            raise ApiError(400, f"A branch called '{branch}' already exists. Switch to that "
                                "branch in order to make changes")
        if head is None or force:
            base = self.repo.head(str(start)) if params.get("start_branch") else start
            if base is None:
                raise ApiError(400, "You can only create or edit files when you are on a branch")
        else:
            base = head
        sha = self.repo.commit_actions(branch, str(base), list(params["actions"]),
                                       str(params["commit_message"]),
                                       author=(user.username, f"{user.username}@example.test"))
        self.s.commits_created += 1
        self._reset_approvals_on_push(branch)
        self._abort_auto_merges(branch, sha, user)
        info = self.repo.commit_info(sha)
        assert info is not None
        info["web_url"] = f"{self.project.base_url}/{self.project.path}/-/commit/{sha}"
        return 201, info

    def _reset_approvals_on_push(self, branch: str) -> None:
        """EE's MergeRequests::ResetApprovalsService: a push to an MR's source branch (open or
        closed) withdraws its approvals when the project resets approvals on push. CE keeps
        them (the service is EE's)."""
        if self.s.profile.edition == "ce" or \
                not self.project.approval_settings["reset_approvals_on_push"]:
            return
        for mr in self.project.mrs.values():
            if mr.source_branch == branch and not mr.from_fork and \
                    mr.state in ("opened", "closed"):
                mr.approved_by.clear()
                mr.approved_at.clear()

    def _abort_auto_merges(self, branch: str, newrev: str, user: User) -> None:
        """app/services/merge_requests/refresh_service.rb: ``refresh_merge_requests!`` calls
        ``abort_auto_merges`` for each MR of the pushed source branch, which aborts where
        ``abort_auto_merges?`` holds: ``merge_params[:sha] != @push.newrev`` (a push, forced
        or not, whose head is not the one auto-merge was set for). The merge user is cleared
        and a system note says "the source branch was updated"."""
        if self.s.defer_refresh:
            self.s.pending_aborts.append((branch, newrev))
            return
        for mr in self.project.mrs.values():
            if mr.source_branch == branch and not mr.from_fork and mr.state == "opened" and \
                    mr.auto_merge and mr.auto_merge_sha != newrev:
                mr.auto_merge, mr.auto_merge_sha = False, None
                mr.notes.append(self._system_note(
                    mr, user, "aborted the automatic merge because the source branch was "
                    "updated"))

    def refresh(self) -> None:
        """Run the refresh jobs held by ``defer_refresh`` (GitLab's Sidekiq catching up)."""
        with self.s.lock:
            pending, self.s.pending_aborts = self.s.pending_aborts, []
            deferred, self.s.defer_refresh = self.s.defer_refresh, False
            bot = next(iter(self.s.users.values()))
            for branch, newrev in pending:
                self._abort_auto_merges(branch, newrev, bot)
            self.s.defer_refresh = deferred

    def _system_note(self, mr: Mr, user: User, body: str) -> dict[str, Any]:
        return {"id": self.project.next_id(), "type": None, "body": body, "attachment": None,
                "author": user.json(), "created_at": now(), "updated_at": now(),
                "system": True, "noteable_id": mr.id, "noteable_iid": mr.iid,
                "noteable_type": "MergeRequest", "resolvable": False}

    # --- merge requests --------------------------------------------------------------------
    def list_mrs(self, user: User, params: dict[str, Any]) -> Answer:
        state = str(params.get("state") or "all")
        labels = set(_labels(params.get("labels")))   # GitLab: MRs carrying all of them
        found = [mr for mr in self.project.mrs.values()
                 if (state == "all" or mr.state == state)
                 and params.get("source_branch") in (None, mr.source_branch)
                 and labels <= set(mr.labels)]
        descending = str(params.get("sort") or "desc") == "desc"
        found.sort(key=lambda mr: mr.iid, reverse=descending)
        answer = [self.project.mr_json(mr) for mr in found]
        for mr in found:
            if mr.merging_left:
                self.tick(mr, user)
        return 200, answer

    def get_mr(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        mr = self.mr(iid)
        answer = self.project.mr_json(mr)
        self.tick(mr, user)
        return 200, answer

    def delete_mr(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        """``DELETE …/merge_requests/:iid`` (lib/api/merge_requests.rb): 404 for an unknown MR,
        then ``authorize!(:destroy_merge_request)``, which only owners and admins hold; 204.
        The MR is gone for good: every later read of it is 404."""
        mr = self.mr(iid)
        if user.username not in self.s.owners:
            raise ApiError(403, "403 Forbidden")
        del self.project.mrs[mr.iid]
        return 204, b""

    def create_mr(self, user: User, params: dict[str, Any]) -> Answer:
        source, target = params.get("source_branch"), params.get("target_branch")
        if not source or not target or not params.get("title"):
            raise ApiError(400, "source_branch, target_branch, title are missing", key="error")
        # MergeRequest#validate_branches: another open MR of the same source project and
        # branch (a fork's MR from a branch of that name does not count).
        for mr in self.project.mrs.values():
            if mr.source_branch == source and not mr.from_fork and mr.state == "opened":
                raise ApiError(409, ["Another open merge request already exists for this "
                                     f"source branch: !{mr.iid}"])
        _title_fits(params["title"])
        if self.repo.head(str(source)) is None:
            raise ApiError(422, [f"Source branch \"{source}\" does not exist"])
        iid = max(self.project.mrs, default=0) + 1
        mr = Mr(id=self.project.next_id(), iid=iid, source_branch=str(source),
                target_branch=str(target), title=str(params["title"]),
                description=str(params.get("description") or ""),
                labels=_labels(params.get("labels")), author=user,
                remove_source_branch=_bool(params.get("remove_source_branch")),
                checking_left=self.s.checking_reads, source_project_id=self.project.id,
                target_project_id=self.project.id)
        mr.rules = [{**rule, "id": self.project.next_id(), "source_rule": {"id": rule["id"]}}
                    for rule in self.project.approval_rules]
        self.project.mrs[iid] = mr
        if self.s.new_mr_pipeline:      # the project's CI starts a pipeline for the new MR
            self.add_pipeline(mr, self.s.new_mr_pipeline)
        self.s.emit("Merge Request Hook", self.project.hook_mr(mr, "open", user))
        return 201, self.project.mr_json(mr)

    def update_mr(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        """``PUT …/merge_requests/:iid`` in GitLab's order (IssuableBaseService#update): a
        ``state_event`` is carried out first (change_additional_attributes → change_state runs
        the Close/ReopenService, which fires the ``close``/``reopen`` hook with the MR's
        attributes as they were), and only then are the other attributes assigned and saved,
        firing a separate ``update`` hook. So a close that also retitles reaches the hook with
        the old title, and a too-long title is refused (400) after the close took effect."""
        mr = self.mr(iid)
        event = params.get("state_event")
        if event == "close" and mr.state == "opened":
            mr.sha, mr.state, mr.closed_at = self.project.head_sha(mr), "closed", now()
            mr.closed_by, mr.updated_at = user, now()
            self.s.emit("Merge Request Hook", self.project.hook_mr(mr, "close", user))
        elif event == "reopen" and mr.state == "closed":
            if any(o.source_branch == mr.source_branch and o.state == "opened"
                   and o.source_project_id == mr.source_project_id
                   for o in self.project.mrs.values()):
                raise ApiError(409, ["Another open merge request already exists for this "
                                     "source branch"])
            mr.state, mr.closed_at, mr.closed_by = "opened", None, None
            mr.updated_at = now()
            self.s.emit("Merge Request Hook", self.project.hook_mr(mr, "reopen", user))
        elif not (params.keys() - {"state_event"}):
            # Nothing carried out (closing a merged MR): one ``update`` hook, as the stand-in
            # has always answered such a request.
            mr.updated_at = now()
            self.s.emit("Merge Request Hook", self.project.hook_mr(mr, "update", user))
            return 200, self.project.mr_json(mr)
        if not (params.keys() - {"state_event"}):
            return 200, self.project.mr_json(mr)
        if "title" in params:
            _title_fits(params["title"])
        for key in ("title", "description"):
            if key in params:
                setattr(mr, key, str(params[key]))
        if "labels" in params:
            mr.labels = _labels(params["labels"])
        # add_labels / remove_labels (lib/api/merge_requests.rb): the others stay.
        removed = set(_labels(params.get("remove_labels")))
        mr.labels = [label for label in mr.labels if label not in removed]
        mr.labels += [label for label in _labels(params.get("add_labels"))
                      if label not in mr.labels]
        mr.updated_at = now()
        self.s.emit("Merge Request Hook", self.project.hook_mr(mr, "update", user))
        return 200, self.project.mr_json(mr)

    # --- notes -----------------------------------------------------------------------------
    def list_notes(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        return 200, list(reversed(self.mr(iid).notes))  # GitLab: newest first by default

    def create_note(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        mr = self.mr(iid)
        if not params.get("body"):
            raise ApiError(400, "body is missing", key="error")
        note = {"id": self.project.next_id(), "type": None, "body": str(params["body"]),
                "attachment": None,
                "author": user.json(), "created_at": now(), "updated_at": now(),
                "system": False, "noteable_id": mr.id, "noteable_iid": mr.iid,
                "noteable_type": "MergeRequest", "resolvable": False}
        mr.notes.append(note)
        return 201, note

    def current_user(self, user: User, params: dict[str, Any]) -> Answer:
        """GET /user: the token's own user ("Get the current user"; a bot's too)."""
        return 200, {**user.json(), "bot": user.username.endswith("bot"),
                     "is_admin": False, "locked": False}

    def update_note(self, user: User, params: dict[str, Any], iid: str, note: str) -> Answer:
        found = next((n for n in self.mr(iid).notes if n["id"] == int(note)), None)
        if found is None:
            raise ApiError(404, "404 Not Found")
        if found["author"]["id"] != user.id:
            raise ApiError(403, "403 Forbidden")
        found.update(body=str(params.get("body") or found["body"]), updated_at=now())
        return 200, found

    # --- approvals -------------------------------------------------------------------------
    def _premium(self) -> None:
        if self.s.profile.edition == "ce":  # CE/Free: the approval-rule routes do not exist
            raise ApiError(404, "404 Not Found", key="error")

    def _may_edit_rules(self) -> None:
        """EE MergeRequestPolicy: ``~can_override_approvers`` prevents ``update_approvers``
        for everyone once the project disables overriding approvers per merge request."""
        if self.project.approval_settings["disable_overriding_approvers_per_merge_request"]:
            raise ApiError(403, "403 Forbidden")

    def project_approvals(self, user: User, params: dict[str, Any]) -> Answer:
        """ee/lib/api/project_approvals.rb ``GET /projects/:id/approvals`` (EE only)."""
        self._premium()
        if user.username in self.s.cannot_read_approval_settings:
            raise ApiError(403, "403 Forbidden")   # authorize! :update_approvers (before 17)
        return 200, dict(self.project.approval_settings)

    def reset_approvals(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        """lib/api/merge_request_approvals.rb ``PUT …/reset_approvals`` (15.4+): only bot
        users (project or group access tokens) may; not on a merged MR."""
        mr = self.mr(iid)
        if user.username not in self.s.bot_users or mr.state == "merged":
            raise ApiError(401, "401 Unauthorized")
        mr.approved_by.clear()
        mr.approved_at.clear()
        return 202, None

    def list_rules(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        self._premium()
        return 200, list(self.mr(iid).rules)

    def create_rule(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        self._premium()
        self._may_edit_rules()
        mr = self.mr(iid)
        if not params.get("name") or "approvals_required" not in params:
            raise ApiError(400, "name, approvals_required are missing", key="error")
        rule = {"id": self.project.next_id(), "name": str(params["name"]),
                "approvals_required": int(params["approvals_required"]),
                "rule_type": "regular", "users": [], "groups": [], "eligible_approvers": [],
                "source_rule": None, "contains_hidden_groups": False, "overridden": False}
        _set_approvers(rule, params)
        mr.rules.append(rule)
        return 201, rule

    def update_rule(self, user: User, params: dict[str, Any], iid: str, rule: str) -> Answer:
        self._premium()
        self._may_edit_rules()
        found = next((r for r in self.mr(iid).rules if r["id"] == int(rule)), None)
        if found is None:
            raise ApiError(404, "404 Not Found")
        if "approvals_required" in params:
            found["approvals_required"] = int(params["approvals_required"])
        _set_approvers(found, params)
        return 200, found

    def approvals(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        mr = self.mr(iid)
        approved_by = [{"user": u.json(), "approved_at": at} for u, at in
                       zip(mr.approved_by, mr.approved_at, strict=True)]
        mine = any(u.id == user.id for u in mr.approved_by)
        if self.s.profile.edition == "ce":  # lib/api/entities/merge_request_approvals.rb
            return 200, {"user_has_approved": mine, "user_can_approve": not mine,
                         "approved": bool(mr.approved_by), "approved_by": approved_by}
        return 200, {  # EE: ApprovalState (doc/api/merge_request_approvals.md)
            "id": mr.id, "iid": mr.iid, "project_id": self.project.json()["id"],
            "title": mr.title, "description": mr.description, "state": self.project.state(mr),
            "created_at": mr.created_at, "updated_at": mr.updated_at,
            "merge_status": self.project.mr_json(mr)["merge_status"],
            "approved": not mr.approvals_left(), "approvals_required": mr.approvals_required(),
            "approvals_left": mr.approvals_left(), "require_password_to_approve": False,
            "approved_by": approved_by, "suggested_approvers": [], "approvers": [],
            "approver_groups": [], "user_has_approved": mine, "user_can_approve": not mine,
            "approval_rules_left": [], "has_approval_rules": bool(mr.rules),
            "merge_request_approvers_available": True,
            "multiple_approval_rules_available": True, "invalid_approvers_rules": []}

    def approve(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        mr = self.mr(iid)
        head = self.project.head_sha(mr)
        if params.get("sha") and params["sha"] != head:
            raise ApiError(409, "SHA does not match HEAD of source branch")
        if mr.state != "opened" or any(u.id == user.id for u in mr.approved_by):
            raise ApiError(401, "401 Unauthorized")
        mr.approved_by.append(user)
        mr.approved_at.append(now())
        action = "approval" if mr.approvals_left() else "approved"
        self.s.emit("Merge Request Hook", self.project.hook_mr(mr, action, user))
        self.try_auto_merge(mr, user)
        return 201, self.approvals(user, params, iid)[1]

    def unapprove(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        """``POST …/unapprove``: a reviewer revokes their own approval (404 without one)."""
        mr = self.mr(iid)
        mine = next((i for i, u in enumerate(mr.approved_by) if u.id == user.id), None)
        if mr.state != "opened" or mine is None:
            raise ApiError(404, "404 Not Found")
        del mr.approved_by[mine], mr.approved_at[mine]
        return 201, self.approvals(user, params, iid)[1]

    # --- merging ---------------------------------------------------------------------------
    # PUT …/merge follows lib/api/merge_requests.rb of the profile's era check for check (the
    # commits are in tests/gitlab/recorded/PROVENANCE.md); the predicates below stand for
    # GitLab's MergeRequest#mergeable_state? / #mergeable? and the auto-merge strategies.
    def merge(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        mr = self.mr(iid)
        if user.username in self.s.cannot_merge:    # can_be_merged_by? false: unauthorized!
            raise ApiError(401, "401 Unauthorized")
        auto = _bool(params.get("auto_merge")) or _bool(params.get("merge_when_pipeline_succeeds"))
        era = self.s.profile.merge_api
        if era == "legacy":
            self._merge_legacy(mr, user, params, auto)
            return 200, self.project.mr_json(mr)
        if era == "pre17":   # merge when pipeline succeeds: only while a pipeline runs
            automatically = auto and self._mergeable_state(mr, skip_ci=True) and \
                self.project.pipeline_active(mr)
        else:                # 17+: merge when checks pass
            automatically = auto and self._merge_when_checks_pass_available(mr)
        immediately = self.project.pipeline_status(mr) == "success" if auto else \
            self._mergeable_state(mr, skip_ci=False)
        if not immediately and not automatically:
            raise ApiError(405, "405 Method Not Allowed")
        if era == "pre17" and not self._mergeable(mr, skip_ci=automatically):
            raise ApiError(422, "Branch cannot be merged")
        if era == "17" and not automatically and not self._mergeable(mr, skip_ci=False):
            raise ApiError(422, "Branch cannot be merged")
        self._check_sha(mr, params)
        if era == "17" and immediately and not self._mergeable(mr, skip_ci=False):
            # Auto-merge asked once the pipeline passed: immediately mergeable, so the route
            # runs MergeService instead of AutoMergeService; its strategy refuses an MR that
            # is not mergeable? (approvals missing, the check not done) without raising, and
            # "immediately_mergeable && !merge_request.merged?" answers 422. Nothing merged,
            # no auto-merge set.
            raise ApiError(422, "Branch cannot be merged")
        self._merge_params(mr, params)
        if immediately:
            self.do_merge(mr, user, refusal=422)
        else:
            self._set_auto_merge(mr, params)
        return 200, self.project.mr_json(mr)

    def _merge_legacy(self, mr: Mr, user: User, params: dict[str, Any], auto: bool) -> None:
        """GitLab 10/11: 405 unless mergeable_state?, 406 unless mergeable?, then the SHA."""
        if not self._mergeable_state(mr, skip_ci=auto):
            raise ApiError(405, "405 Method Not Allowed")
        if not self._mergeable(mr, skip_ci=auto):
            raise ApiError(406, "Branch cannot be merged")
        self._check_sha(mr, params)
        self._merge_params(mr, params)
        if auto and self.project.pipeline_active(mr):
            self._set_auto_merge(mr, params)
        else:
            self.do_merge(mr, user, refusal=406)

    def _check_sha(self, mr: Mr, params: dict[str, Any]) -> None:
        head = self.project.head_sha(mr)
        if params.get("sha") and params["sha"] != head:
            raise ApiError(409, "SHA does not match HEAD of source branch: " + str(head))

    def _set_auto_merge(self, mr: Mr, params: dict[str, Any]) -> None:
        """lib/api/merge_requests.rb stores ``sha: params[:sha] || merge_request.diff_head_sha``
        in the MR's merge_params; a later push to another head aborts (see _abort_auto_merges)."""
        mr.auto_merge = True
        mr.auto_merge_sha = str(params.get("sha") or self.project.head_sha(mr))

    @staticmethod
    def _merge_params(mr: Mr, params: dict[str, Any]) -> None:
        if "should_remove_source_branch" in params:
            mr.remove_source_branch = _bool(params["should_remove_source_branch"])

    def _mergeable_state(self, mr: Mr, *, skip_ci: bool) -> bool:
        """MergeRequest#mergeable_state?: open, not being merged, CI passed unless skipped."""
        if mr.state != "opened" or mr.merging_left:
            return False
        return skip_ci or self.project.pipeline_status(mr) in (None, "success")

    def _mergeable(self, mr: Mr, *, skip_ci: bool) -> bool:
        """MergeRequest#mergeable?: the state, the mergeability check done, approvals met."""
        return (self._mergeable_state(mr, skip_ci=skip_ci) and not mr.checking_left
                and not mr.approvals_left())

    def _merge_when_checks_pass_available(self, mr: Mr) -> bool:
        """17+ "merge when checks pass": an open MR that is not mergeable yet, or whose
        pipeline still runs; not after a failed pipeline."""
        if mr.state != "opened" or mr.merging_left:
            return False
        if self.project.pipeline_status(mr) in ("failed", "canceled"):
            return False
        return not self._mergeable(mr, skip_ci=False) or self.project.pipeline_active(mr)

    def start_merge(self, iid: int, reads: int) -> None:
        """A merge GitLab is carrying out: the MR reads as ``locked`` for ``reads`` reads."""
        with self.s.lock:
            self.mr(iid).merging_left = reads

    def tick(self, mr: Mr, user: User) -> None:
        """One read of the MR: the mergeability check and a running merge move on."""
        if mr.checking_left:
            mr.checking_left -= 1
            if not mr.checking_left:       # the check is done: a pending auto-merge can run
                self.try_auto_merge(mr, user)
        if mr.merging_left:
            mr.merging_left -= 1
            if not mr.merging_left:
                with contextlib.suppress(ApiError):  # a clash: the MR stays open, as on GitLab
                    self.do_merge(mr, user, refusal=422)

    def do_merge(self, mr: Mr, user: User, *, refusal: int = 422) -> None:
        message = (f"Merge branch '{mr.source_branch}' into '{mr.target_branch}'\n\n{mr.title}\n\n"
                   f"See merge request {self.project.path}!{mr.iid}\n")
        head = self.project.head_sha(mr)
        squash = self.s.squash_merges
        sha = self.repo.merge(mr.target_branch, mr.source_branch, message, squash=squash)
        if sha is None:
            raise ApiError(refusal, "Branch cannot be merged")
        mr.sha, mr.state, mr.merged_at = head, "merged", now()
        if squash:   # fast-forward to the squash commit: no merge commit at all
            mr.merge_commit_sha, mr.squash_commit_sha = None, sha
        else:
            mr.merge_commit_sha = sha
        if mr.remove_source_branch:
            self.repo.delete_branch(mr.source_branch)
        self.s.emit("Merge Request Hook", self.project.hook_mr(mr, "merge", user))

    def try_auto_merge(self, mr: Mr, user: User) -> None:
        if mr.auto_merge and self.project.detailed_status(mr) == "mergeable":
            if mr.auto_merge_sha != self.project.head_sha(mr):
                # app/services/merge_requests/merge_service.rb updated_check!: the merge params'
                # sha is not the head: "Branch has been updated since the merge was requested.
                # Please review the changes." The MR stays open and auto-merge ends.
                mr.auto_merge, mr.auto_merge_sha = False, None
                return
            try:
                self.do_merge(mr, user)
            except ApiError:  # conflicts: GitLab leaves the MR open and says so in the UI
                mr.auto_merge, mr.auto_merge_sha = False, None

    def run_pipeline(self, iid: int, status: str) -> dict[str, Any]:
        """What a CI run reports; on success an auto-merge MR is merged, as on GitLab."""
        with self.s.lock:
            mr = self.mr(iid)
            pipeline = self.add_pipeline(mr, status)
            bot = next(iter(self.s.users.values()))
            self.s.emit("Pipeline Hook", self.project.hook_pipeline(mr, pipeline, bot))
            if status == "success":
                self.try_auto_merge(mr, bot)
        self.s.flush()
        return pipeline

    def add_pipeline(self, mr: Mr, status: str) -> dict[str, Any]:
        pipeline = {"id": self.project.next_id(), "iid": len(mr.pipelines) + 1,
                    "project_id": self.project.json()["id"],
                    "sha": self.project.head_sha(mr), "ref": mr.source_branch,
                    "status": status, "source": "merge_request_event",
                    "created_at": now(), "updated_at": now(),
                    "web_url": f"{self.project.base_url}/{self.project.path}/-/pipelines"}
        mr.pipelines.append(pipeline)
        return pipeline

    def pipelines(self, user: User, params: dict[str, Any], iid: str) -> Answer:
        return 200, list(reversed(self.mr(iid).pipelines))


Handler = Callable[..., Answer]
ROUTES: list[tuple[str, str, Handler]] = [
    (r"/api/v4/user", "GET", Api.current_user),
    (P, "GET", Api.get_project),
    (P + r"/repository/branches/(?P<branch>[^/]+)", "GET", Api.get_branch),
    (P + r"/repository/branches/(?P<branch>[^/]+)", "DELETE", Api.delete_branch),
    (P + r"/repository/tree", "GET", Api.tree),
    (P + r"/repository/files/(?P<path>[^/]+)/raw", "GET", Api.file_raw),
    (P + r"/repository/files/(?P<path>[^/]+)", "GET", Api.file),
    (P + r"/repository/commits", "POST", Api.create_commit),
    (P + r"/repository/merge_base", "GET", Api.merge_base),
    (P + r"/repository/commits/(?P<sha>[0-9a-zA-Z]+)", "GET", Api.get_commit),
    (P + r"/merge_requests", "GET", Api.list_mrs),
    (P + r"/merge_requests", "POST", Api.create_mr),
    (MR, "GET", Api.get_mr),
    (MR, "PUT", Api.update_mr),
    (MR, "DELETE", Api.delete_mr),
    (MR + r"/notes", "GET", Api.list_notes),
    (MR + r"/notes", "POST", Api.create_note),
    (MR + r"/notes/(?P<note>\d+)", "PUT", Api.update_note),
    (MR + r"/approval_rules", "GET", Api.list_rules),
    (MR + r"/approval_rules", "POST", Api.create_rule),
    (MR + r"/approval_rules/(?P<rule>\d+)", "PUT", Api.update_rule),
    (MR + r"/approvals", "GET", Api.approvals),
    (MR + r"/approve", "POST", Api.approve),
    (MR + r"/unapprove", "POST", Api.unapprove),
    (MR + r"/reset_approvals", "PUT", Api.reset_approvals),
    (P + r"/approvals", "GET", Api.project_approvals),
    (MR + r"/merge", "PUT", Api.merge),
    (MR + r"/pipelines", "GET", Api.pipelines),
]


def _set_approvers(rule: dict[str, Any], params: dict[str, Any]) -> None:
    """``user_ids``/``group_ids`` (EE's approval rule API) become the rule's users and groups,
    listed as GitLab does (objects with their id; names are not needed by promoter)."""
    for key, listed in (("user_ids", "users"), ("group_ids", "groups")):
        if key in params:
            values = params[key] if isinstance(params[key], list) else [params[key]]
            rule[listed] = [{"id": int(value)} for value in values]
