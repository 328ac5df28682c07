"""Desired files vs. the target tree → one commit's actions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promoter.core.changes import plan, summary
from promoter.errors import UserError
from promoter.ports.forge import Action

PREFIX = "manifests/m/overlays/prod/"


def test_create_update_delete_and_nothing_when_identical() -> None:
    current = {PREFIX + "kustomization.yaml": "old\n", PREFIX + "stale.yaml": "x\n",
               "manifests/m/base/deployment.yaml": "same\n", "README.md": "keep\n"}
    desired: dict[str, str | None] = {
        PREFIX + "kustomization.yaml": "new\n", PREFIX + "patch.yaml": "p\n",
        "manifests/m/base/deployment.yaml": "same\n", "manifests/m/base/gone.yaml": None}
    actions = plan(desired, current, [PREFIX])
    assert actions == [Action(PREFIX + "kustomization.yaml", "update", "new\n"),
                       Action(PREFIX + "patch.yaml", "create", "p\n"),
                       Action(PREFIX + "stale.yaml", "delete")]
    assert summary(actions)["delete"] == [PREFIX + "stale.yaml"]
    after = {**{k: v for k, v in current.items() if k != PREFIX + "stale.yaml"},
             PREFIX + "kustomization.yaml": "new\n", PREFIX + "patch.yaml": "p\n"}
    assert plan(desired, after, [PREFIX]) == []


def test_prefixes_match_whole_directories() -> None:
    current = {"manifests/m/overlays/prod-eu/x.yaml": "x"}
    assert plan({}, current, ["manifests/m/overlays/prod"]) == []


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs.yaml", "a/../b.yaml", "a//b.yaml",
                                  "a/.git/config", "a\\b.yaml", "", "a/./b"])
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(UserError, match="refusing file path"):
        plan({path: "x"}, {})


names = st.sampled_from([PREFIX + n for n in ("a.yaml", "b.yaml", "c/d.yaml")])
trees = st.dictionaries(names, st.sampled_from(["1\n", "2\n"]))


@given(trees, trees)
def test_applying_the_plan_reaches_the_desired_tree(desired: dict[str, str],
                                                    current: dict[str, str]) -> None:
    result = dict(current)
    for action in plan(desired, current, [PREFIX]):
        if action.kind == "delete":
            del result[action.path]
        else:
            assert (action.kind == "create") == (action.path not in result)
            result[action.path] = action.content or ""
    assert result == desired
    assert plan(desired, result, [PREFIX]) == []


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))     # not UTF-8: a forge reads it back as bytes


def test_binary_content_is_compared_as_bytes() -> None:
    path = "manifests/m/forecast-prod.png"
    assert plan({path: PNG}, {}) == [Action(path, "create", PNG)]
    assert plan({path: PNG}, {path: PNG}) == []
    assert plan({path: PNG}, {path: PNG[:-1]}) == [Action(path, "update", PNG)]
    # Bytes that happen to be UTF-8 come back from a forge as text: still the same file.
    assert plan({path: b"plain\n"}, {path: "plain\n"}) == []
    assert plan({path: "plain\n"}, {path: b"plain\n"}) == []
    assert plan({path: "text\n"}, {path: PNG}) == [Action(path, "update", "text\n")]
    assert plan({path: None}, {path: PNG}) == [Action(path, "delete")]
