"""Binary files (a forecast plot's PNG) through both git providers: committed byte for byte,
read back as bytes, and a re-proposal of the same bytes changes nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from promoter.ports.git import Outcome
from tests.gitlab.conftest import NAME, GitLabHarness, Harness, LocalHarness, proposal
from tests.gitlab.standin import routes

PLOT = f"manifests/{NAME}/forecast-production.png"
# A PNG signature, then every byte value: nothing here decodes as UTF-8 or survives a text
# round trip (\r\n, \x00, \x1a, high bytes).
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _with_plot(content: bytes, version: str = "1") -> Any:
    base = proposal(version)
    return dataclasses.replace(base, files={**base.files, PLOT: content})


def _blob(harness: Harness, ref: str) -> bytes:
    if isinstance(harness, GitLabHarness):
        found = harness.standin.repo.file(ref, PLOT)
    else:
        assert isinstance(harness, LocalHarness)
        found = harness.provider.forge.repo.git_bytes("--git-dir", str(harness.remote),
                                                      "cat-file", "blob", f"{ref}:{PLOT}")
    assert found is not None
    return found


def test_bytes_are_committed_unchanged_and_the_same_bytes_again_are_a_no_op(
        harness: Harness) -> None:
    first = harness.provider.propose(_with_plot(PNG))
    assert first.outcome is Outcome.CREATED and PLOT in first.changed_paths
    branch = first.merge_request.source_branch if first.merge_request else ""
    assert _blob(harness, branch) == PNG
    # The forge port reads it back as the bytes it holds; the text view leaves it out.
    forge: Any = harness.provider.forge   # type: ignore[attr-defined]
    assert forge.read_files(branch, [PLOT], [])[PLOT] == PNG
    assert harness.provider.read(PLOT, branch) is None
    assert PLOT not in harness.provider.files(f"manifests/{NAME}/", branch)
    assert harness.provider.read(f"manifests/{NAME}/base/kustomization.yaml", branch)
    commits = harness.commits()

    again = harness.provider.propose(_with_plot(PNG))

    assert again.outcome is Outcome.UNCHANGED and not again.commit_created
    assert harness.commits() == commits and len(harness.mrs()) == 1


def test_changed_bytes_update_the_open_mr_and_merge_onto_the_target(harness: Harness) -> None:
    first = harness.provider.propose(_with_plot(PNG))
    newer = harness.provider.propose(_with_plot(PNG[::-1]))
    assert newer.outcome is Outcome.UPDATED and newer.commit_created
    assert newer.mr_iid == first.mr_iid and newer.changed_paths
    assert newer.merge_request is not None
    assert _blob(harness, newer.merge_request.source_branch) == PNG[::-1]
    for user in ("alice", "bob"):
        harness.approve(newer.merge_request.iid, user)
    harness.merge(newer.merge_request.iid, newer.head_sha)
    assert _blob(harness, "main") == PNG[::-1]
    # Merged: the target holds exactly these bytes, so proposing them again is a no-op.
    assert harness.provider.propose(_with_plot(PNG[::-1])).outcome is Outcome.UNCHANGED


@pytest.mark.parametrize("make_harness", ["gitlab-ee-17"], indirect=True)
def test_gitlab_gets_the_bytes_as_a_base64_commit_action(make_harness: Any) -> None:
    harness = make_harness()
    seen: list[dict[str, Any]] = []
    create_commit = routes.Api.create_commit

    def recording(api: Any, user: Any, params: dict[str, Any]) -> Any:
        seen.extend(params.get("actions") or [])
        return create_commit(api, user, params)

    # The route table holds the handler itself: swap that entry for the recording one.
    index = next(i for i, (_, verb, handler) in enumerate(routes.ROUTES)
                 if handler is create_commit and verb == "POST")
    pattern = routes.ROUTES[index][0]
    routes.ROUTES[index] = (pattern, "POST", recording)
    try:
        harness.provider.propose(_with_plot(PNG))
    finally:
        routes.ROUTES[index] = (pattern, "POST", create_commit)

    plot = [action for action in seen if action["file_path"] == PLOT]
    assert len(plot) == 1 and plot[0]["encoding"] == "base64"
    assert plot[0]["content"].isascii() and plot[0]["content"] != PNG.decode("latin-1")
    texts = [action for action in seen if action["file_path"] != PLOT]
    assert texts and {action["encoding"] for action in texts} == {"text"}
    assert harness.standin.repo.file(f"promote/{NAME}/production", PLOT) == PNG


def test_paths_list_every_file_binary_ones_too_and_tell_a_missing_branch(
        harness: Harness) -> None:
    result = harness.provider.propose(_with_plot(PNG))
    branch = result.merge_request.source_branch if result.merge_request else ""
    if isinstance(harness, GitLabHarness):
        harness.standin.requests.clear()

    paths = harness.provider.paths(f"manifests/{NAME}/", branch)

    assert paths is not None and PLOT in paths
    assert f"manifests/{NAME}/base/kustomization.yaml" in paths
    if isinstance(harness, GitLabHarness):
        # One tree listing: no file is read for its paths.
        assert not [path for _, path in harness.standin.requests if "/files/" in path]
    # A branch with nothing under the prefix is not a missing branch: GitLab answers both
    # with the same 404, and a GC merge must not read the second as "every overlay gone".
    assert harness.provider.paths("manifests/nobody-here/", branch) == frozenset()
    assert harness.provider.paths(f"manifests/{NAME}/", "no-such-branch") is None
