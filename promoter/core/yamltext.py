"""The only way a value reaches rendered YAML: through this serializer.

A string is written plain only when it matches a conservative pattern that every YAML parser
(go-yaml in kubectl and kustomize, ruamel.yaml here; YAML 1.1 and 1.2) reads back as the same
string; anything else (numbers-as-text, ``true``, ``{a: b}``, ``&anchor``, ``!!python/object``,
newlines, ``{{ 7*7 }}``) is written as a JSON string literal, which both YAML versions read as
exactly that string. So a value can never become YAML structure, an alias, a tag or a template.
Collections are emitted in block style (readable in merge-request diffs) or, inline, as JSON.

Why not a YAML library per value: a document emitter costs milliseconds per call in pure
Python, and the render benchmark needs 3,000 overlays in well under 3 s. Round-tripping through
ruamel.yaml is checked by property tests over arbitrary strings and structures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Characters legal in JSON strings that YAML treats as line breaks or non-printable, and the
# bidirectional marks, embeddings, overrides and isolates (naming.DISPLAY_CONTROLS, which
# names refuse): written raw, a description holding U+202E would display reordered in the
# committed file, the MR diff and `--dry-run` output (Trojan Source); escaped (\u202e) it
# reads back as the same string and shows what it is.
_YAML_UNSAFE = re.compile("[\u007f-\u009f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff"
                          "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_PLAIN_SAFE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
# YAML 1.1 reads these (any case) as booleans or null when plain.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


class YamlFragment(str):
    """Text produced by this module, and therefore safe to place in a template verbatim."""


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    return _YAML_UNSAFE.sub(_escape, text)


def scalar(value: Any) -> str:
    if isinstance(value, str):
        if _PLAIN_SAFE.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return _json(value)
    if value is None or isinstance(value, bool | int | float):
        return _json(value)
    raise TypeError(f"cannot serialise {type(value).__name__} into YAML")


_COLLECTIONS = (dict, list, tuple, Mapping)  # concrete types first: abc checks are slow


def to_yaml_literal(value: Any) -> YamlFragment:
    """One value inline: a scalar, or a collection as a JSON flow literal."""
    if isinstance(value, YamlFragment):
        return value
    if isinstance(value, _COLLECTIONS):
        return YamlFragment(_json(_plain(value)))
    return YamlFragment(scalar(value))


def to_yaml_block(value: Any, indent: int) -> YamlFragment:
    """A collection in block style, starting on a new line indented by ``indent`` spaces.

    Use after a key: ``labels: {{ labels | block(4) }}``. Empty collections stay inline.
    """
    if not isinstance(value, _COLLECTIONS) or not value:
        return YamlFragment(" " + to_yaml_literal(value))
    return YamlFragment("\n" + "\n".join(_block_lines(value, indent)))


def _block_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict | Mapping):
        for key, item in value.items():
            if isinstance(item, _COLLECTIONS) and item:
                nested = indent + 2 if isinstance(item, dict | Mapping) else indent
                lines.append(f"{pad}{scalar(str(key))}:")
                lines.extend(_block_lines(item, nested))
            else:
                lines.append(f"{pad}{scalar(str(key))}: {to_yaml_literal(item)}")
        return lines
    for item in value:
        if isinstance(item, dict | Mapping) and item:
            item_lines = _block_lines(item, indent + 2)
            item_lines[0] = f"{pad}- {item_lines[0][indent + 2:]}"
            lines.extend(item_lines)
        else:
            lines.append(f"{pad}- {to_yaml_literal(item)}")
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value
