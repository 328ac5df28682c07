"""Every value must come back from a real YAML parser exactly as it went in."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from promoter.core.yamltext import to_yaml_block, to_yaml_literal

HOSTILE = [
    "{a: b}", "\n- x", "&anchor", "*alias", "!!python/object:os.system", "{{ 7*7 }}",
    "{% raw %}", "true", "no", "Off", "~", "null", "1e3", "0x1F", "012", "1:20", ".inf",
    "- item", "key: value", "# comment", "a #b", "'quoted'", '"dq"', "trailing ", " leading",
    "", "tab\there", "line\u2028sep", "nel\u0085x", "bom\ufeff", "emoji 🚀", "Zürich",
    "---", "...", "? complex", "| literal", "> folded", "@at", "`tick", "%TAG",
]


def _load(text: str) -> object:
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_stay_strings(value: str) -> None:
    assert _load(f"key: {to_yaml_literal(value)}\n") == {"key": value}


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_in_block_collections(value: str) -> None:
    data = {"labels": {value or "k": value}, "items": [value, {"name": value, "v": [value]}]}
    assert _load(f"root:{to_yaml_block(data, 2)}\n") == {"root": data}


scalars = st.one_of(st.text(), st.integers(), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False))
documents = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(), children, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_round_trips_inline(value: object) -> None:
    assert _load(f"key: {to_yaml_literal(value)}\n") == {"key": value}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), documents, min_size=1, max_size=4))
def test_any_mapping_round_trips_as_block(value: dict[str, object]) -> None:
    assert _load(f"root:{to_yaml_block(value, 2)}\n") == {"root": value}
