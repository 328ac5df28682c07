"""GitLab webhook payloads → typed events, refusing malformed input."""

from __future__ import annotations

import json

import pytest

from promoter.core.gitlab_payloads import parse
from promoter.core.mr_events import (
    MergeRequestEvent,
    PipelineEvent,
    approval_status,
    approvals_short,
    promotion_key,
)
from promoter.errors import UserError


def mr_payload(**attributes: object) -> bytes:
    base = {"iid": 3, "source_branch": "promote/fraud/production", "target_branch": "main",
            "state": "merged", "action": "merge", "url": "https://gitlab.example/mr/3",
            "last_commit": {"id": "a" * 40}, "merge_commit_sha": "b" * 40}
    return json.dumps({"object_kind": "merge_request", "user": {"username": "alice"},
                       "project": {"id": 42, "path_with_namespace": "group/gitops"},
                       "object_attributes": {**base, **attributes}}).encode()


def test_merge_request_hook() -> None:
    event = parse("Merge Request Hook", mr_payload())
    assert isinstance(event, MergeRequestEvent)
    assert (event.action, event.iid, event.name, event.env, event.head_sha, event.user) == \
        ("merge", 3, "fraud", "production", "a" * 40, "alice")
    assert event.merge_commit_sha == "b" * 40


def test_pipeline_hook() -> None:
    body = json.dumps({"object_kind": "pipeline",
                       "project": {"id": 42, "path_with_namespace": "group/gitops"},
                       "object_attributes": {"id": 9, "ref": "promote/fraud/staging",
                                             "sha": "c" * 40, "status": "success"},
                       "merge_request": {"iid": 4, "state": "opened"}}).encode()
    event = parse("Pipeline Hook", body)
    assert isinstance(event, PipelineEvent)
    assert (event.status, event.iid, event.name, event.env) == ("success", 4, "fraud", "staging")


@pytest.mark.parametrize("body", [
    b"[]", b"nope", mr_payload(iid="3"), mr_payload(iid=-1),
    json.dumps({"object_kind": "merge_request"}).encode(), mr_payload(source_branch=["x"]),
])
def test_malformed_payloads_are_user_errors(body: bytes) -> None:
    with pytest.raises(UserError):
        parse("Merge Request Hook", body)


def test_other_events_and_branches() -> None:
    assert parse("Push Hook", b"{}") is None
    assert promotion_key("feature/x") is None
    assert promotion_key("promote/Bad_Name/prod") is None
    assert promotion_key("promote/../prod") is None
    assert promotion_key("promote/fraud/prod") == ("fraud", "prod")


@pytest.mark.parametrize(("action", "counted", "short"), [
    ("approved", (1, 2), True),      # CE/Free: one of two
    ("approved", (2, 2), False),
    ("approved", (3, 2), False),
    ("approved", (0, 0), False),     # no count stated: nothing to wait for
    ("approved", None, False),       # Premium: GitLab counted its rules
    ("merge", (0, 2), False),        # only "approved" is counted
])
def test_an_approved_short_of_the_count_is_one_approval(
        action: str, counted: tuple[int, int] | None, short: bool) -> None:
    reason = approvals_short(action, counted)
    assert (reason is not None) == short
    if counted is not None and short:
        assert reason is not None and reason.startswith(f"{counted[0]} of {counted[1]} ")


@pytest.mark.parametrize("source_project_id", [77, None])
def test_a_fork_mr_on_a_promoter_branch_is_not_promoters(source_project_id: int | None) -> None:
    """GitLab sends ``source_project_id``/``target_project_id`` in ``object_attributes`` and
    in a pipeline's ``merge_request``: a fork's (or a deleted fork's, null) branch of
    promoter's name carries no (name, env)."""
    event = parse("Merge Request Hook", mr_payload(source_project_id=source_project_id,
                                                   target_project_id=42))
    assert isinstance(event, MergeRequestEvent) and (event.name, event.env) == (None, None)
    ours = parse("Merge Request Hook", mr_payload(source_project_id=42, target_project_id=42))
    assert isinstance(ours, MergeRequestEvent) and ours.name == "fraud"
    body = json.dumps({"object_kind": "pipeline",
                       "project": {"id": 42, "path_with_namespace": "group/gitops"},
                       "object_attributes": {"id": 9, "ref": "promote/fraud/staging",
                                             "sha": "c" * 40, "status": "success"},
                       "merge_request": {"iid": 4, "state": "opened",
                                         "source_branch": "promote/fraud/staging",
                                         "source_project_id": source_project_id,
                                         "target_project_id": 42}}).encode()
    pipeline = parse("Pipeline Hook", body)
    assert isinstance(pipeline, PipelineEvent) and pipeline.name is None


@pytest.mark.parametrize(("row", "open_now", "expected"), [
    ("mr_opened", False, "approved"), ("approved", False, "approved"),
    ("closed", True, "approved"),      # reopened; the reopen's recording still to come
    ("closed", False, None),           # sent before the close, delivered after it
    ("merged", True, None), ("decommissioning", True, None), ("superseded", True, None),
    (None, True, None),                # an MR the row left: its version is tagged no more
])
def test_an_approval_approves_only_an_mr_its_row_waits_on(
        row: str | None, open_now: bool, expected: str | None) -> None:
    asked: list[bool] = []

    def forge_says() -> bool:
        asked.append(True)
        return open_now

    assert approval_status(row, forge_says) == expected
    assert asked == ([True] if row == "closed" else [])   # the forge is asked only then
