"""The reader of kustomize output and intents resolves the YAML 1.2 core schema as go-yaml v3
spells it, nothing more, and every way loading fails is one named UserError."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from promoter.errors import UserError
from promoter.validation import ManifestChecker, validate_overlay
from promoter.yaml_read import core_schema_yaml, load_documents


def _read(scalar: str) -> object:
    return core_schema_yaml().load(f"value: {scalar}\n")["value"]


@pytest.mark.parametrize(("scalar", "value"), [
    ("~", None), ("null", None), ("NULL", None), ("", None),
    ("true", True), ("False", False), ("TRUE", True),
    ("7", 7), ("-12", -12), ("+3", 3), ("0o17", 15), ("0x1F", 31),
    ("1.5", 1.5), (".5", 0.5), ("1.", 1.0), ("-1.5E-3", -0.0015), ("1e5", 100000.0),
    (".inf", math.inf), ("-.Inf", -math.inf), ("+.INF", math.inf),
])
def test_the_core_schema_is_read_as_go_yaml_reads_it(scalar: str, value: object) -> None:
    read = _read(scalar)
    assert read == value and type(read) is type(value)


@pytest.mark.parametrize("scalar", [
    "._", "+_", "-_", "-._", ".__", "<<", "=", "._5", ".0_",    # ruamel's extras
    "1_000", "0b11", "0X1F", "-0o7", "2001-12-14", "1:20",        # not in the core schema
    "yes", "no", "on", "off", "y", "-.nan",                       # YAML 1.1 words
])
def test_everything_else_plain_stays_a_string(scalar: str) -> None:
    assert _read(scalar) == scalar


def test_nan_is_a_float() -> None:
    assert math.isnan(_read(".nan"))  # type: ignore[arg-type]


def test_other_readers_are_not_changed() -> None:
    """The resolver is registered on its own class, not on ruamel's shared one."""
    core_schema_yaml()
    assert YAML(typ="safe", pure=True).load("a: 1_000\n") == {"a": 1000}


@pytest.mark.parametrize(("text", "said"), [
    ("a: !!float ._\n", "could not convert string to float"),
    ("a: " + "9" * 5000 + "\n", "digits"),
    ("a: [1\n", "expected ',' or ']'"),
])
def test_unreadable_text_is_one_named_user_error(text: str, said: str) -> None:
    with pytest.raises(UserError, match=r"^kustomize output is not YAML: ") as raised:
        load_documents(text, what="kustomize output")
    assert said in raised.value.message and "\n" not in raised.value.message


def test_validate_reports_unreadable_output_as_the_overlays_problem(tmp_path: Path) -> None:
    checker = ManifestChecker(build=lambda overlay: "kind: x\nvalue: !!int ._\n",
                              problems=lambda document: [])
    report = validate_overlay(tmp_path, checker)
    assert report.problems == ["kustomize output is not YAML: invalid literal for int() "
                               "with base 10: '.'"]
