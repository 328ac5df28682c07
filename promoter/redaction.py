"""Taking secrets out of text that leaves the process: logs, error messages, failure reasons.

One place for the rule, so the service's JSON logs and an adapter that quotes a subprocess's
output (pip) mask the same things the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

# The rules that need no configuration live in the core, which MR text also goes through.
from promoter.core.masking import (
    MASK,
    password_param,
    without_password_params,
    without_url_userinfo,
)

__all__ = ["MASK", "Redactor", "password_param", "without_password_params",
           "without_url_userinfo"]
_MIN_SECRET = 4  # shorter values would mask ordinary words


class Redactor:
    """Replaces every configured secret value (also as it appears inside a JSON string).
    Credentials told by their shape (core.masking) are masked in the text itself, before it
    is serialised: their rules read quotes, which JSON escapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len,
                               reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            for form in sorted(_forms(secret), key=len, reverse=True):
                text = text.replace(form, MASK)
        return text


def _forms(secret: str) -> set[str]:
    """How ``secret`` can appear in text that leaves: as it is or as Python's repr writes it
    (a message quoting a value with !r doubles a backslash), each also inside a JSON string,
    escaped to ASCII or not (the service's log lines keep non-ASCII as it is)."""
    plain = {secret, repr(secret)[1:-1]}
    return {form for text in plain for form in (
        text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1])}
