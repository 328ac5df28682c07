"""Merge requests from forks. GitLab lists them among the target project's MRs
(``GET /projects/:id/merge_requests``, ``source_project_id`` the fork's; doc/api/
merge_requests.md), and a fork's branch may well be named ``promote/<name>/<env>``. Such an MR
is not promoter's: it is never retitled, described, given promoter's rule or merged, and
promoter opens its own MR from the project's branch (GitLab refuses a second open MR only for
the same source project and branch)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.core.mr_events import ForgeEvent
from promoter.ports.git import Outcome
from promoter.secret_settings import Secret
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.state.pushed_heads import PushedHeads
from tests.gitlab.conftest import ENV, NAME, GitLabHarness, make_standin, proposal
from tests.gitlab.standin.server import StandIn
from tests.gitlab.standin.state import PROJECT_ID, Mr

FORK_ID = 77
BRANCH = f"promote/{NAME}/{ENV}"


@pytest.fixture
def premium(tmp_path: Path) -> Iterator[StandIn]:
    server = make_standin(tmp_path, per_page=2, profile="ee-17")
    yield server
    server.stop()


def _fork_mr(standin: StandIn, iid: int, *, state: str = "opened",
             description: str = "from my fork") -> Mr:
    """An MR from the fork's branch of promoter's name; its head lives in the fork only."""
    main = standin.repo.head("main")
    sha = standin.repo.commit_actions(f"fork-{iid}", main, [
        {"action": "create", "file_path": "evil.txt", "content": "x\n"}], "fork work\n")
    standin.repo.delete_branch(f"fork-{iid}")
    mr = Mr(id=900 + iid, iid=iid, source_branch=BRANCH, target_branch="main",
            title="my change", description=description, labels=["fork"],
            author=standin.users["alice-token"], sha=sha, state=state,
            source_project_id=FORK_ID)
    standin.project.mrs[iid] = mr
    return mr


def test_an_open_fork_mr_on_promoters_branch_is_left_alone(premium: StandIn,
                                                          tmp_path: Path) -> None:
    fork = _fork_mr(premium, 1)
    harness = GitLabHarness(premium, tmp_path)
    first = harness.provider.propose(proposal("1", approver_user_ids=(17,)))
    assert first.outcome is Outcome.CREATED and first.mr_iid not in (None, 1)
    assert first.mr_iid is not None
    own = premium.project.mrs[first.mr_iid]
    assert own.source_project_id == PROJECT_ID and own.source_branch == BRANCH
    second = harness.provider.propose(proposal("2", approver_user_ids=(17,)))
    assert second.outcome is Outcome.UPDATED and second.mr_iid == first.mr_iid
    assert harness.provider.find(NAME, ENV).iid == first.mr_iid   # type: ignore[union-attr]
    # The fork's MR is exactly as its author left it.
    assert (fork.title, fork.description, fork.labels, fork.state) == \
        ("my change", "from my fork", ["fork"], "opened")
    assert fork.rules == [] and fork.notes == [] and not fork.auto_merge
    assert not any(method != "GET" and (path.endswith("/merge_requests/1")
                                        or "/merge_requests/1/" in path)
                   for method, path in premium.requests)


def test_a_closed_fork_mr_copying_promoters_marker_is_not_a_human_close(
        premium: StandIn, tmp_path: Path) -> None:
    """A fork's MR closed with promoter's version marker in its description must not make
    promoter believe a reviewer turned that version down."""
    _fork_mr(premium, 1, state="closed",
             description=f"copied\n\n<!-- promoter:key={NAME}/{ENV} version=1 -->\n")
    result = GitLabHarness(premium, tmp_path).provider.propose(proposal("1"))
    assert result.outcome is Outcome.CREATED and result.mr_iid != 1


def test_a_fork_mr_hook_is_not_taken_for_promoters(tmp_path: Path) -> None:
    """Even where promoter's ledger names the MR's iid (an earlier version adopted a fork's
    MR and pushed for it), a hook about an MR from a fork is not acted on."""
    heads = PushedHeads(tmp_path / "state")
    heads.record(PROJECT_ID, 7, BRANCH, "a" * 40, "3")
    events: list[ForgeEvent] = []
    handler = GitLabHookHandler(Secret("t"), DeliveryLog(tmp_path / "state"), heads.pushed,
                                events.append)

    def hook(source_project_id: int | None) -> dict[str, object]:
        attributes = {"action": "merge", "iid": 7, "state": "merged", "source_branch": BRANCH,
                      "target_branch": "main", "last_commit": {"id": "a" * 40}, "url": "u",
                      "title": "t", "source_project_id": source_project_id,
                      "target_project_id": PROJECT_ID}
        body = {"object_kind": "merge_request", "user": {"username": "mallory"},
                "project": {"id": PROJECT_ID, "path_with_namespace": "group/gitops"},
                "object_attributes": attributes}
        status, answer = handler.handle({"X-Gitlab-Token": "t",
                                         "X-Gitlab-Event": "Merge Request Hook"},
                                        json.dumps(body).encode())
        assert status == 200
        return answer

    for fork in (FORK_ID, None):            # null: the fork has since been deleted
        answer = hook(fork)
        assert answer == {"status": "ignored", "reason": "not a promoter merge request"}
    assert events == []
    assert hook(PROJECT_ID)["status"] == "accepted" and len(events) == 1
