"""Hostile intent YAML: every shape that once cost a worker seconds to minutes and gigabytes
is refused up front, with a message naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoter import rendering
from promoter.errors import UserError
from promoter.intent_yaml import MAX_INTENT_BYTES, load_intent_yaml

# Like the 811-byte document from the review: each level holds the previous one seven times, so
# building it expands to 7^9 strings (~1.1 GB, ~65 s before this reader existed).
ALIAS_BOMB = "apiVersion: promoter.dev/v1alpha1\nkind: ModelDeployment\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 7) if i else ', '.join(['lol'] * 7)}]\n"
    for i in range(10))


def test_an_alias_bomb_is_refused_before_expanding() -> None:
    assert len(ALIAS_BOMB) < 1024
    with pytest.raises(UserError, match="anchors or aliases"):
        load_intent_yaml(ALIAS_BOMB, origin="modeldeployment.yaml")


def test_a_single_anchor_is_refused_too() -> None:
    with pytest.raises(UserError, match="anchors or aliases"):
        load_intent_yaml("spec: &s {runtime: kserve}\n", origin="intent")


def test_a_document_over_the_size_cap_is_refused_unread() -> None:
    huge = "\n".join(f"k{i}: {i}" for i in range(200_000))       # ~2.6 MB, 200k keys
    with pytest.raises(UserError, match=f"at most {MAX_INTENT_BYTES} bytes"):
        load_intent_yaml(huge, origin="intent")


def test_too_many_nodes_within_the_size_cap_are_refused() -> None:
    many = "\n".join(f"k{i}: {i}" for i in range(5000))
    assert len(many.encode()) < MAX_INTENT_BYTES
    with pytest.raises(UserError, match="YAML nodes"):
        load_intent_yaml(many, origin="intent")


@pytest.mark.parametrize("nested", ["x: " + "[" * 3000 + "]" * 3000,
                                    "x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(40))])
def test_deep_nesting_is_refused(nested: str) -> None:
    with pytest.raises(UserError, match=r"nests deeper|flow collections"):
        load_intent_yaml(nested, origin="intent")


def test_bytes_that_are_not_utf8_are_a_user_error() -> None:
    with pytest.raises(UserError, match="not UTF-8"):
        load_intent_yaml(b"spec: \xff\xfe", origin="intent")


def test_an_ordinary_intent_still_loads() -> None:
    loaded = load_intent_yaml(Path("examples/llm-chat.yaml").read_text(), origin="llm-chat")
    assert loaded["kind"] == "ModelDeployment"


def test_render_refuses_a_hostile_file_with_exit_1(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    with pytest.raises(UserError, match="anchors or aliases"):
        rendering.load_intent_file(bomb)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * (MAX_INTENT_BYTES // 4))
    with pytest.raises(UserError, match=f"larger than {MAX_INTENT_BYTES} bytes"):
        rendering.load_intent_file(big)


@pytest.mark.parametrize("scalar", ["._", "+_", "-_", "-._", ".__", "._5", ".0_", "<<", "=",
                                    "1_000", "2024-01-01", "yes", "on"])
def test_plain_scalars_outside_the_core_schema_are_the_strings_they_look_like(
        scalar: str) -> None:
    """As go-yaml (kustomize) reads them, and as the manifests are read back: ruamel's extras
    made `._` a float it then failed to build (a bare ValueError), `._5` the float 0.5. YAML
    1.1 words (`yes`, `on`) stayed strings before and still do."""
    loaded = load_intent_yaml(f"spec:\n  description: {scalar}\n  {scalar}: x\n", origin="i")
    assert loaded == {"spec": {"description": scalar, scalar: "x"}}


@pytest.mark.parametrize(("text", "said"), [
    ("spec:\n  scaling:\n    target: " + "9" * 5000 + "\n", "4300 digits"),
    ("spec:\n  description: !!float ._\n", "could not convert string to float"),
    ("spec:\n  description: !!int +_\n", "invalid literal for int()"),
], ids=["5000-digit int", "!!float ._", "!!int +_"])
def test_what_loading_cannot_build_is_a_user_error(text: str, said: str) -> None:
    assert len(text.encode()) < MAX_INTENT_BYTES
    with pytest.raises(UserError, match=r"modeldeployment\.yaml is not valid YAML") as raised:
        load_intent_yaml(text, origin="modeldeployment.yaml")
    assert said in raised.value.message
