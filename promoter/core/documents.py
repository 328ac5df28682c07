"""Reading into parsed YAML/JSON documents whose shape is not trusted. Pure.

Manifests, Argo CD objects and intents arrive as nested mappings and lists that a hand edit
(or another tool) may have given any shape: a path that does not lead anywhere reads as None,
never as an exception the caller has to guess at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dig(data: Any, *path: str | int) -> Any:
    """The value at ``path`` (mapping keys, list indexes) under ``data``, or None where the path
    leaves the document: a missing key or index, or a step into something of another type."""
    for key in path:
        if isinstance(key, int):
            data = data[key] if isinstance(data, list) and -1 < key < len(data) else None
        elif isinstance(data, Mapping):
            data = data.get(key)
        else:
            return None
    return data
