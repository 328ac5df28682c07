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


BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.parametrize("control", list(BIDI))
def test_text_direction_controls_are_written_escaped(control: str) -> None:
    """A description holding U+202E (right-to-left override) was written raw, so the committed
    YAML, the MR diff and `--dry-run` displayed it reordered (Trojan Source). Escaped, it shows
    as \\u202e and still reads back as the same string."""
    from promoter.core.naming import DISPLAY_CONTROLS

    value = f"safe {control}edoc lanretni"
    for written in (to_yaml_literal(value), to_yaml_block({value: [value]}, 2)):
        assert not DISPLAY_CONTROLS.search(written.replace("\n", "")), repr(written)
        assert f"\\u{ord(control):04x}" in written
    assert _load(f"key: {to_yaml_literal(value)}\n") == {"key": value}
    assert _load(f"root:{to_yaml_block({value: [value]}, 2)}\n") == {"root": {value: [value]}}
