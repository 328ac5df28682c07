"""The stand-in's answers match real GitLab's: keys, types and status codes.

Every route promoter's adapter calls is driven over real HTTP on the CE and EE profiles and
its answer is checked against GitLab's own JSON schemas (spec/fixtures/api/schemas), schemas
written from its entity definitions (lib/api/entities) and examples from its API
documentation, all kept in tests/gitlab/recorded/ (provenance in PROVENANCE.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.gitlab.conftest import make_standin
from tests.gitlab.standin.server import StandIn

RECORDED = Path(__file__).parent / "recorded"
MR = "/api/v4/projects/42/merge_requests"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / name).read_text())  # type: ignore[no-any-return]


def _registry() -> Registry:
    return Registry().with_resources(
        (path.name, Resource.from_contents(recorded(path.name)["schema"],
                                           default_specification=DRAFT7))
        for path in RECORDED.glob("*.schema.json"))


REGISTRY = _registry()


def check_schema(body: Any, name: str) -> None:
    validator = Draft7Validator(recorded(name)["schema"], registry=REGISTRY)
    problems = sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in validator.iter_errors(body))
    assert not problems, f"{name}: " + "; ".join(problems)


def _kind(value: Any) -> str:
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) \
        else type(value).__name__


def within(answer: Any, example: Any, where: str = "$") -> None:
    """Every key the stand-in sends is in the real example, with the example's type."""
    if answer is None or example is None:
        return
    assert _kind(answer) == _kind(example), f"{where}: {_kind(answer)} vs {_kind(example)}"
    if isinstance(example, dict):
        extra = set(answer) - set(example)
        assert not extra, f"{where}: keys GitLab does not send: {sorted(extra)}"
        for key in answer:
            within(answer[key], example[key], f"{where}.{key}")
    elif isinstance(example, list) and answer and example:
        within(answer[0], example[0], f"{where}[0]")


def covers(answer: dict[str, Any], example: dict[str, Any]) -> None:
    """Every key of the (abridged) real example is in the stand-in's answer, same type."""
    missing = set(example) - set(answer)
    assert not missing, f"keys GitLab sends that the stand-in lacks: {sorted(missing)}"
    for key, value in example.items():
        if value is not None and answer[key] is not None:
            assert _kind(answer[key]) == _kind(value), key


class Client:
    def __init__(self, standin: StandIn, token: str = "bot-token") -> None:
        self.base = standin.base_url
        self.headers = {"PRIVATE-TOKEN": token}

    def __call__(self, method: str, path: str, **data: Any) -> tuple[int, Any]:
        answer = requests.request(method, self.base + path, json=data or None,
                                  headers=self.headers, timeout=10)
        if answer.headers.get("Content-Type") == "application/json":
            return answer.status_code, answer.json()
        return answer.status_code, answer.content


@pytest.fixture(params=["ee-17", "ce-17"])
def standin(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StandIn]:
    server = make_standin(tmp_path, per_page=2, profile=request.param)
    yield server
    server.stop()


def _open(call: Client) -> tuple[str, int]:
    status, commit = call("POST", "/api/v4/projects/42/repository/commits", branch="feature",
                          start_branch="main", commit_message="Add a", actions=[
                              {"action": "create", "file_path": "dir/a.md", "content": "a\n"}])
    assert status == 201
    check_schema(commit, "commit_basic.schema.json")
    status, mr = call("POST", MR, source_branch="feature", target_branch="main", title="Add a")
    assert status == 201
    check_schema(mr, "merge_request.schema.json")
    return str(commit["id"]), int(mr["iid"])


def test_repository_routes_answer_gitlabs_shapes(standin: StandIn) -> None:
    call = Client(standin)
    for project in ("42", "group%2Fgitops"):
        status, found = call("GET", f"/api/v4/projects/{project}")
        assert status == 200
        check_schema(found, "project.schema.json")
    head, _ = _open(call)
    status, branch = call("GET", "/api/v4/projects/42/repository/branches/feature")
    assert status == 200
    check_schema(branch, "branch.schema.json")
    status, tree = call("GET", "/api/v4/projects/42/repository/tree?recursive=true&ref=feature"
                               "&path=dir")
    assert status == 200 and tree
    for item in tree:
        check_schema(item, "tree_object.schema.json")
    status, commit = call("GET", f"/api/v4/projects/42/repository/commits/{head}")
    assert status == 200
    check_schema(commit, "commit_basic.schema.json")
    status, raw = call("GET", "/api/v4/projects/42/repository/files/dir%2Fa.md/raw?ref=feature")
    assert (status, raw) == (200, b"a\n")
    status, missing = call("GET", "/api/v4/projects/42/repository/branches/nope")
    assert status == 404 and _error_matches(missing, 404, "not_found! (a resource)")
    base_of = "/api/v4/projects/42/repository/merge_base?refs[]={}&refs[]={}".format
    main = standin.repo.head("main")
    status, base = call("GET", base_of(head, "main"))
    assert status == 200 and base["id"] == main
    check_schema(base, "commit_basic.schema.json")
    status, unknown = call("GET", base_of("f" * 40, "main"))
    assert (status, unknown) == (400, {"message": f"Could not find ref: {'f' * 40}"})
    assert call("DELETE", "/api/v4/projects/42/repository/branches/feature")[0] == 204


def test_merge_request_routes_answer_gitlabs_shapes(standin: StandIn) -> None:
    call = Client(standin)
    _, iid = _open(call)
    status, listed = call("GET", f"{MR}?source_branch=feature&state=all")
    assert status == 200 and len(listed) == 1
    check_schema(listed[0], "merge_request.schema.json")
    status, one = call("GET", f"{MR}/{iid}")
    assert status == 200
    check_schema(one, "merge_request.schema.json")
    status, updated = call("PUT", f"{MR}/{iid}", description="More", labels="a,b")
    assert status == 200 and updated["labels"] == ["a", "b"]
    check_schema(updated, "merge_request.schema.json")
    status, note = call("POST", f"{MR}/{iid}/notes", body="hello")
    assert status == 201
    check_schema(note, "note.schema.json")
    status, edited = call("PUT", f"{MR}/{iid}/notes/{note['id']}", body="hello again")
    assert status == 200
    check_schema(edited, "note.schema.json")
    status, notes = call("GET", f"{MR}/{iid}/notes")
    assert status == 200
    for item in notes:
        check_schema(item, "note.schema.json")
    status, missing = call("GET", f"{MR}/99")
    assert status == 404 and _error_matches(missing, 404, "not_found! (a resource)")


def test_approvals_answer_the_editions_entity(standin: StandIn) -> None:
    call = Client(standin)
    _, iid = _open(call)
    assert Client(standin, "alice-token")("POST", f"{MR}/{iid}/approve")[0] == 201
    status, approvals = call("GET", f"{MR}/{iid}/approvals")
    assert status == 200 and approvals["approved_by"][0]["user"]["username"] == "alice"
    if standin.profile.edition == "ce":
        check_schema(approvals, "approvals_ce.schema.json")
        return
    check_schema(approvals, "approvals_ee.schema.json")
    covers(approvals, recorded("approvals_ee.example.json")["example"])


def test_approval_rules_exist_only_on_ee(standin: StandIn) -> None:
    call = Client(standin)
    _, iid = _open(call)
    status, created = call("POST", f"{MR}/{iid}/approval_rules", name="promoter",
                           approvals_required=2)
    if standin.profile.edition == "ce":
        assert (status, created) == (404, recorded("errors.json")["errors"][0]["body"])
        assert call("GET", f"{MR}/{iid}/approval_rules") == (404, {"error": "404 Not Found"})
        return
    example = recorded("approval_rule.example.json")["example"]
    assert status == 201
    within(created, example)
    status, rules = call("GET", f"{MR}/{iid}/approval_rules")
    assert status == 200
    within(rules[0], example)
    status, updated = call("PUT", f"{MR}/{iid}/approval_rules/{created['id']}",
                           approvals_required=1)
    assert status == 200 and updated["approvals_required"] == 1
    within(updated, example)


def _error_matches(body: Any, status: int, case: str) -> bool:
    found = next(e for e in recorded("errors.json")["errors"] if e["case"] == case)
    assert found["status"] == status
    if "body" in found:
        return body == found["body"]  # type: ignore[no-any-return]
    return set(body) == {found["body_key"]} and \
        re.match(found["pattern"], body[found["body_key"]]) is not None


@pytest.mark.parametrize("profile", ["ee-17", "ee-legacy"])
def test_merge_answers_and_refusals_have_gitlabs_bodies(tmp_path: Path, profile: str) -> None:
    standin = make_standin(tmp_path, per_page=2, profile=profile)
    try:
        call = Client(standin)
        head, iid = _open(call)
        standin.project.mrs[iid].checking_left = 100
        status, body = call("PUT", f"{MR}/{iid}/merge", sha=head)
        cannot = 406 if profile == "ee-legacy" else 422
        case = "merge: mergeable? false (10/11)" if cannot == 406 else \
            "merge: mergeable? false (14+)"
        assert status == cannot and _error_matches(body, cannot, case)
        standin.project.mrs[iid].checking_left = 0
        status, body = call("PUT", f"{MR}/{iid}/merge", sha="0" * 40)
        assert status == 409 and _error_matches(body, 409, "check_sha_param!")
        standin.cannot_merge.add("alice")
        status, body = Client(standin, "alice-token")("PUT", f"{MR}/{iid}/merge", sha=head)
        assert status == 401 and _error_matches(body, 401, "unauthorized!")
        status, merged = call("PUT", f"{MR}/{iid}/merge", sha=head)
        assert status == 200 and merged["state"] == "merged"
        check_schema(merged, "merge_request.schema.json")
        status, body = call("PUT", f"{MR}/{iid}/merge", sha=head)
        assert status == 405 and _error_matches(body, 405, "not_allowed!")
    finally:
        standin.stop()


def test_every_recorded_file_is_named_in_the_provenance() -> None:
    provenance = (RECORDED / "PROVENANCE.md").read_text()
    for path in RECORDED.glob("*.json"):
        data = recorded(path.name)
        sources = {data.get("source")} | {e.get("source") for e in data.get("errors", ())}
        for source in sources - {None}:
            assert f"`{source}`" in provenance, f"{path.name}: {source} has no provenance"
        assert path.name in provenance, f"{path.name} is not listed in PROVENANCE.md"
