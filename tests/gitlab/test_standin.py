"""The stand-in answers like GitLab: status codes, error bodies, pagination (python-gitlab)."""

from __future__ import annotations

from typing import Any

import gitlab
import pytest
import requests

from tests.gitlab.standin.server import StandIn


def project(standin: StandIn, token: str = "bot-token") -> Any:
    return gitlab.Gitlab(standin.base_url, private_token=token, timeout=10).projects.get(
        "group/gitops")


def commit(p: Any, branch: str, action: str, path: str, content: str = "x\n",
           **extra: Any) -> Any:
    return p.commits.create({"branch": branch, "commit_message": f"{action} {path}",
                             "actions": [{"action": action, "file_path": path,
                                          "content": content}], **extra})


def error_of(call: Any) -> tuple[int, Any]:
    with pytest.raises(gitlab.GitlabError) as raised:
        call()
    return raised.value.response_code or 0, raised.value.error_message


def test_commit_errors(standin: StandIn) -> None:
    p = project(standin)
    assert error_of(lambda: commit(p, "main", "create", "README.md")) == \
        (400, "A file with this name already exists")
    assert error_of(lambda: commit(p, "main", "update", "missing.md")) == \
        (400, "A file with this name doesn't exist")
    assert error_of(lambda: commit(p, "main", "create", "../escape.md")) == \
        (400, "Path cannot include directory traversal")
    assert error_of(lambda: commit(p, "nowhere", "create", "a.md")) == \
        (400, "You can only create or edit files when you are on a branch")
    assert standin.repo.count() == 1               # nothing was written


def test_merge_request_errors_and_merge(standin: StandIn) -> None:
    p = project(standin)
    head = commit(p, "feature", "create", "a.md", start_branch="main").id
    mr = p.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                 "title": "Add a"})
    code, message = error_of(lambda: p.mergerequests.create(
        {"source_branch": "feature", "target_branch": "main", "title": "again"}))
    assert (code, message) == (409, ["Another open merge request already exists for this "
                                     f"source branch: !{mr.iid}"])
    assert error_of(lambda: p.mergerequests.get(99))[0] == 404
    put = p.manager.gitlab.http_put
    path = f"/projects/42/merge_requests/{mr.iid}/merge"
    assert error_of(lambda: put(path, post_data={"sha": "0" * 40}))[0] == 409
    merged = put(path, post_data={"sha": head})
    assert merged["state"] == "merged" and merged["merge_commit_sha"] == standin.repo.head("main")
    assert error_of(lambda: put(path, post_data={}))[0] == 405
    assert standin.deliveries[-1].payload["object_attributes"]["action"] == "merge"


def test_a_title_over_255_characters_is_refused_on_create_and_update(
        standin: StandIn) -> None:
    p = project(standin)
    commit(p, "feature", "create", "a.md", start_branch="main")
    create = {"source_branch": "feature", "target_branch": "main"}
    assert error_of(lambda: p.mergerequests.create({**create, "title": "t" * 256})) == \
        (400, {"title": ["is too long (maximum is 255 characters)"]})
    mr = p.mergerequests.create({**create, "title": "t" * 255})
    mr.title = mr.title + " - superseded"
    assert error_of(mr.save)[0] == 400
    assert p.mergerequests.get(mr.iid).title == "t" * 255


def test_only_an_owner_deletes_a_merge_request_and_it_is_gone_for_good(
        standin: StandIn) -> None:
    p = project(standin)
    commit(p, "feature", "create", "a.md", start_branch="main")
    mr = p.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                 "title": "Add a"})
    assert error_of(lambda: p.mergerequests.delete(mr.iid)) == (403, "403 Forbidden")
    project(standin, "alice-token").mergerequests.delete(mr.iid)    # alice is an owner
    assert error_of(lambda: p.mergerequests.get(mr.iid)) == \
        (404, "404 Merge Request Not Found")
    assert error_of(lambda: project(standin, "alice-token").mergerequests.delete(mr.iid))[0] \
        == 404


def test_conflicting_merge_is_422(standin: StandIn) -> None:
    p = project(standin)
    commit(p, "feature", "update", "README.md", start_branch="main")
    commit(p, "main", "update", "README.md", content="other\n")
    mr = p.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                 "title": "Clash"})
    put = p.manager.gitlab.http_put
    assert error_of(lambda: put(f"/projects/42/merge_requests/{mr.iid}/merge",
                                post_data={}))[0] == 422


def test_bad_token_and_unknown_project(standin: StandIn) -> None:
    assert error_of(lambda: project(standin, "nope")) == (401, "401 Unauthorized")
    client = gitlab.Gitlab(standin.base_url, private_token="bot-token", timeout=10)
    assert error_of(lambda: client.projects.get("group/other")) == (404, "404 Project Not Found")


def test_lists_paginate_with_gitlab_headers(standin: StandIn) -> None:
    p = project(standin)
    for index in range(5):
        commit(p, f"b{index}", "create", f"f{index}.md", start_branch="main")
        p.mergerequests.create({"source_branch": f"b{index}", "target_branch": "main",
                                "title": f"MR {index}"})
    answer = requests.get(f"{standin.base_url}/api/v4/projects/42/merge_requests",
                          params={"per_page": 2, "page": 2}, timeout=10,
                          headers={"PRIVATE-TOKEN": "bot-token"})
    headers = answer.headers
    assert (headers["X-Page"], headers["X-Per-Page"], headers["X-Total"],
            headers["X-Total-Pages"], headers["X-Next-Page"], headers["X-Prev-Page"]) == \
        ("2", "2", "5", "3", "3", "1")
    assert answer.links["next"]["url"].startswith(standin.base_url + "/api/v4/projects/42/")
    assert "page=1" in answer.links["prev"]["url"] and "page=3" in answer.links["last"]["url"]
    assert len(p.mergerequests.list(get_all=True)) == 5   # python-gitlab follows Link: next


def test_hooks_carry_gitlab_headers(standin: StandIn) -> None:
    p = project(standin)
    commit(p, "feature", "create", "a.md", start_branch="main")
    p.mergerequests.create({"source_branch": "feature", "target_branch": "main", "title": "A"})
    delivery = standin.deliveries[-1]
    assert delivery.event == "Merge Request Hook"
    assert {"X-Gitlab-Event", "Idempotency-Key", "X-Gitlab-Webhook-UUID"} <= set(delivery.headers)
    again = standin.redeliver(delivery)
    assert again.headers["Idempotency-Key"] == delivery.headers["Idempotency-Key"]
    assert again.headers["X-Gitlab-Webhook-UUID"] != delivery.headers["X-Gitlab-Webhook-UUID"]


def test_a_close_that_also_retitles_hooks_the_close_with_the_old_title_then_an_update(
        standin: StandIn) -> None:
    """GitLab's IssuableBaseService#update runs the state_event (CloseService, which fires the
    "close" hook) before it assigns the other attributes and fires an "update" hook. A stand-in
    that retitled first hid that promoter's close reached its hook with the old title."""
    p = project(standin)
    commit(p, "feature", "create", "a.md", start_branch="main")
    mr = p.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                 "title": "Add a"})
    before = len(standin.deliveries)
    p.mergerequests.update(mr.iid, {"state_event": "close", "title": "Add a - superseded"})
    hooks = [d.payload["object_attributes"] for d in standin.deliveries[before:]]
    assert [(h["action"], h["title"], h["state"]) for h in hooks] == [
        ("close", "Add a", "closed"), ("update", "Add a - superseded", "closed")]
    # A state_event alone: one hook, the close.
    p.mergerequests.update(mr.iid, {"state_event": "reopen"})
    assert [d.payload["object_attributes"]["action"]
            for d in standin.deliveries[before + 2:]] == ["reopen"]
