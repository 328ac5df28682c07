"""GitLab webhook payloads (Merge Request Hook, Pipeline Hook) → the neutral forge events.

Pure. Webhook bodies come from outside: every field read is type-checked, and only branches
named ``promote/<name>/<env>`` with valid names, of the project itself (not a fork's), become
events promoter acts on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from promoter.core.events import load_json
from promoter.core.mr_events import (
    ForgeEvent,
    MergeRequestEvent,
    PipelineEvent,
    promotion_key,
)
from promoter.errors import UserError

EVENT_HEADERS = {"Merge Request Hook": "merge_request", "Pipeline Hook": "pipeline"}


def parse(event_header: str, body: bytes) -> ForgeEvent | None:
    """The event, or None for event kinds promoter does not handle."""
    kind = EVENT_HEADERS.get(event_header)
    if kind is None:
        return None
    payload = load_json(body)  # bounded depth, 64-bit integers, valid Unicode (400 if not)
    if not isinstance(payload, dict) or payload.get("object_kind") != kind:
        raise UserError(f"webhook body is not a {event_header} payload (object_kind differs)")
    return _merge_request(payload) if kind == "merge_request" else _pipeline(payload)


def _merge_request(payload: Mapping[str, Any]) -> MergeRequestEvent:
    attributes = _mapping(payload, "object_attributes")
    project = _mapping(payload, "project")
    # An action or pipeline status this version does not know (GitLab adds them: 17.x's
    # pipeline `canceling`) is parsed and then ignored with a 200 (gitlab_hook): GitLab counts
    # every 4xx against the hook and disables it, merge and approval deliveries included.
    action = _text(attributes, "action", required=False) or "update"
    source = _text(attributes, "source_branch")
    key = promotion_key(source) if _from_the_project(attributes, _int(project, "id")) else None
    last_commit = attributes.get("last_commit")
    head = last_commit.get("id") if isinstance(last_commit, Mapping) else None
    user = payload.get("user")
    return MergeRequestEvent(
        action=action, project_id=_int(project, "id"),
        project_path=_text(project, "path_with_namespace"), iid=_int(attributes, "iid"),
        state=_text(attributes, "state"), source_branch=source,
        target_branch=_text(attributes, "target_branch"),
        head_sha=head if isinstance(head, str) else None,
        url=_text(attributes, "url", required=False) or "",
        user=user.get("username") if isinstance(user, Mapping) and
        isinstance(user.get("username"), str) else None,
        name=key[0] if key else None, env=key[1] if key else None,
        merge_commit_sha=_text(attributes, "merge_commit_sha", required=False) or None,
        title=_text(attributes, "title", required=False))


def _pipeline(payload: Mapping[str, Any]) -> PipelineEvent:
    attributes = _mapping(payload, "object_attributes")
    project = _mapping(payload, "project")
    status = _text(attributes, "status")
    mr = payload.get("merge_request")
    ref = _text(attributes, "ref")
    source = mr.get("source_branch") if isinstance(mr, Mapping) else None
    key = promotion_key(source if isinstance(source, str) else ref) \
        if not isinstance(mr, Mapping) or _from_the_project(mr, _int(project, "id")) else None
    return PipelineEvent(
        pipeline_id=_int(attributes, "id"), project_id=_int(project, "id"),
        project_path=_text(project, "path_with_namespace"), ref=ref,
        head_sha=_text(attributes, "sha"), status=status,
        iid=_int(mr, "iid") if isinstance(mr, Mapping) and mr.get("iid") is not None else None,
        name=key[0] if key else None, env=key[1] if key else None)


def _from_the_project(mr: Mapping[str, Any], project_id: int) -> bool:
    """An MR from a branch of the hook's project itself. A fork's MR into the project has the
    fork's ``source_project_id`` (null once the fork is deleted): its branch may carry a
    promoter name, yet it is not promoter's MR. Payloads without the fields are taken as the
    project's (GitLab sends both in ``object_attributes`` and a pipeline's
    ``merge_request``)."""
    return all(mr.get(key, project_id) == project_id
               for key in ("source_project_id", "target_project_id"))


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise UserError(f"webhook body lacks the object {key!r}")
    return value


def _text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if isinstance(value, str) and len(value) <= 1024:
        return value
    if value is None and not required:
        return ""
    raise UserError(f"webhook field {key!r} must be a string of at most 1024 characters")


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UserError(f"webhook field {key!r} must be a non-negative integer")
