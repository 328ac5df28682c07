"""Approvals on GitLab: promoter's merge-request approval rule and the project settings it
depends on (Premium; GitLab Free has no approval rules API and answers 404 or 403).

The ``promoter`` rule only holds when the project resets approvals on push and forbids
editing approval rules per merge request (``GET /projects/:id/approvals``); promoter cannot
set those, so it reads them and says when they are off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from promoter.adapters.gitlab_calls import Caller, NotFound, Refused
from promoter.errors import AuthError
from promoter.ports.forge import NO_OVERRIDES_PER_MR, RESET_APPROVALS_ON_PUSH

APPROVAL_RULE = "promoter"
# Both must be true (``GET /projects/:id/approvals``) for the ``promoter`` rule to hold.
APPROVAL_SETTINGS = (RESET_APPROVALS_ON_PUSH, NO_OVERRIDES_PER_MR)
_log = logging.getLogger(__name__)
_logged_weak_settings: set[tuple[str, tuple[str, ...]]] = set()   # logged once per process


def require(call: Caller, mr: Any, iid: int, count: int, user_ids: Sequence[int],
            group_ids: Sequence[int]) -> bool:
    """Make merge request ``mr`` (!``iid``) need ``count`` approvals from those users or
    groups; False where GitLab cannot enforce it (Free, or project rules that require less
    or, where approvers are named, let others approve)."""
    rules_api = mr.approval_rules
    try:
        rules = call.read(f"read approval rules of !{iid}", rules_api.list, get_all=True)
    except NotFound:  # GitLab Free: no approval rules API
        return False
    except Refused as exc:
        if exc.status == 403:  # GitLab Free answers 403 on some versions
            return False
        raise
    rule = next((r for r in rules if r.name == APPROVAL_RULE), None)
    wanted: dict[str, Any] = {"name": APPROVAL_RULE, "approvals_required": count}
    if user_ids or group_ids:
        wanted.update(user_ids=sorted(user_ids), group_ids=sorted(group_ids))
    try:
        if rule is None:
            call.write(f"add the approval rule to !{iid}", rules_api.create, wanted)
        elif (rule.approvals_required != count
              or _ids(getattr(rule, "users", None)) != sorted(user_ids)
              or _ids(getattr(rule, "groups", None)) != sorted(group_ids)):
            # python-gitlab requires id and merge_request_iid in the body of this update.
            call.write(f"update the approval rule of !{iid}", rules_api.update,
                       rule.id, {**wanted, "id": rule.id, "merge_request_iid": iid,
                                 "user_ids": sorted(user_ids), "group_ids": sorted(group_ids)})
    except Refused as exc:
        if exc.status != 403:
            raise
        # "Prevent editing approval rules in merge requests" refuses every MR-level rule,
        # promoter's too: then the project's own rules must require at least ``count``, and
        # where the environment names its approvers, from those approvers only.
        if user_ids or group_ids:
            return any(_holds_for(r, count, user_ids, group_ids) for r in rules)
        return _required_by_project_rules(call, mr, iid) >= count
    return True


def _holds_for(rule: Any, count: int, user_ids: Sequence[int],
               group_ids: Sequence[int]) -> bool:
    """Whether one of the MR's rules (``GET …/merge_requests/:iid/approval_rules``: its
    ``users`` and ``groups`` as objects with their ids) stands for promoter's: a regular rule
    requiring ``count`` or more, naming approvers, all of them among ``user_ids`` and
    ``group_ids`` (an approval it counts is one the environment's approvers gave). A rule
    with hidden groups (``contains_hidden_groups``) names approvers the token cannot see."""
    attributes = getattr(rule, "attributes", {})
    required = attributes.get("approvals_required")
    users, groups = _ids(attributes.get("users")), _ids(attributes.get("groups"))
    return (attributes.get("rule_type", "regular") == "regular"
            and isinstance(required, int) and required >= count
            and not attributes.get("contains_hidden_groups")
            and bool(users or groups)
            and set(users) <= set(user_ids) and set(groups) <= set(group_ids))


def _required_by_project_rules(call: Caller, mr: Any, iid: int) -> int:
    found = call.read(f"read approvals of !{iid}", mr.approvals.get)
    required = found.attributes.get("approvals_required")
    return required if isinstance(required, int) else 0


def weak_settings(call: Caller, project: Any) -> tuple[str, ...]:
    """The approval settings of ``project`` that are off (or cannot be read)."""
    try:
        found = call.read("read the project's approval settings", project.approvals.get)
    except (NotFound, Refused) as exc:
        if isinstance(exc, Refused) and exc.status != 403:
            raise
        # Before 17 the route needs Maintainer (update_approvers); unknown counts as off.
        return APPROVAL_SETTINGS
    settings: dict[str, Any] = found.attributes
    return tuple(name for name in APPROVAL_SETTINGS if settings.get(name) is not True)


def warn_once(project_path: str, weak: tuple[str, ...]) -> None:
    """Log weak settings once per process and project (every job would repeat them)."""
    key = (project_path, weak)
    if weak and key not in _logged_weak_settings:
        _logged_weak_settings.add(key)
        _log.warning("GitLab project %s: approval settings %s are off or unreadable; "
                     "approvals can outlive a push or be lowered per merge request. "
                     "Turn both on under Settings > Merge requests > Approval "
                     "settings (the second with a project approval rule for the target "
                     "branch requiring the count, naming the environment's approvers if "
                     "it has any: it blocks promoter's rule on the MR)",
                     project_path, ", ".join(weak))


def reset(call: Caller, mr: Any, iid: int) -> bool:
    """``PUT …/reset_approvals`` (GitLab 15.4+): only bot users (project or group access
    tokens) may; anyone else gets 401, older GitLab 404."""
    try:
        call.write(f"withdraw the approvals of !{iid}", mr.reset_approvals)
    except (AuthError, NotFound):
        return False
    return True


def _ids(members: Any) -> list[int]:
    """The ids of an approval rule's users or groups, as GitLab lists them."""
    return sorted(int(member["id"]) for member in members or [] if isinstance(member, dict))
