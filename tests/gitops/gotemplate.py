"""The subset of Go's text/template that promoter's Argo CD templates use, with Go's semantics.

Supported actions: ``{{.a.b.c}}`` (field chain over maps) and ``{{index .a.b "key"}}`` /
``{{index .path.segments 3}}``. A missing map key renders ``<no value>`` (Go's default), or
raises with ``missingkey=error`` (what the ApplicationSet sets). Any other action raises, so a
template that grows beyond this subset fails the tests instead of being half-rendered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ACTION = re.compile(r"\{\{(.*?)\}\}")
_FIELD = re.compile(r"^\s*((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*$")
_INDEX = re.compile(r'^\s*index\s+((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s+("(?:[^"\\]|\\.)*"|\d+)\s*$')


class MissingKey(KeyError):
    pass


def _lookup(data: Any, chain: str, missing_error: bool) -> Any:
    parts = chain.strip(".").split(".")
    value = data
    for position, part in enumerate(parts):
        if not isinstance(value, Mapping):
            # Go: "nil pointer evaluating interface {}.<part>"
            raise MissingKey(f"{chain}: nothing to evaluate .{part} on")
        if part in value:
            value = value[part]
        elif missing_error:
            raise MissingKey(f"{chain}: map has no entry for key {part!r}")
        elif position == len(parts) - 1:
            return None
        else:
            raise MissingKey(f"{chain}: nil pointer evaluating .{parts[position + 1]}")
    return value


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(template: str, data: Mapping[str, Any], *, missingkey_error: bool = False) -> str:
    def action(match: re.Match[str]) -> str:
        body = match.group(1)
        field = _FIELD.match(body)
        if field:
            return _text(_lookup(data, field.group(1), missingkey_error))
        index = _INDEX.match(body)
        if index:
            container = _lookup(data, index.group(1), missingkey_error)
            key = index.group(2)
            if container is None:
                raise MissingKey(f"index of untyped nil ({index.group(1)})")
            if key.startswith('"'):
                if not isinstance(container, Mapping):
                    raise ValueError(f"cannot index {index.group(1)} with a string")
                return _text(container.get(key[1:-1]))
            return _text(container[int(key)])  # Go: index out of range is an error too
        raise ValueError(f"unsupported template action {{{{{body}}}}}")

    return _ACTION.sub(action, template)
