"""Text every store can hold: the state database (SQLite, PostgreSQL) and the audit trail.

Exception messages carry whatever the outside put in them: a file name Python decoded with
surrogate escapes (``caf\\udce9.yaml``), a ``\\ud800`` escape in an MLflow or GitLab error body,
a NUL. UTF-8 cannot encode a lone surrogate and PostgreSQL's text cannot hold a NUL, so
writing such a message failed, and a job's outcome (its reason) was never recorded: the job
ran again after its lease, and ended parked without its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def storable(text: str) -> str:
    """``text`` with each lone surrogate written as its ``\\udXXX`` escape and NUL as ``\\x00``
    (everything else as it was)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def storable_fields(value: Any, text: Callable[[str], str] = lambda found: found) -> Any:
    """``value`` (an audit entry: JSON-like) with every string in it ``storable``, each string
    value passed through ``text`` first (the audit trail's masking of URL credentials)."""
    if isinstance(value, str):
        return storable(text(value))
    if isinstance(value, dict):
        return {storable(str(key)): storable_fields(item, text) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_fields(item, text) for item in value]
    return value
