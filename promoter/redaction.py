"""Taking secrets out of text that leaves the process: logs, error messages, failure reasons.

One place for the rule, so the service's JSON logs and an adapter that quotes a subprocess's
output (pip) mask the same things the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

MASK = "***"
_MIN_SECRET = 4  # shorter values would mask ordinary words
# user:password@ or token@ in any URL; a URL's userinfo is a credential in every scheme we meet.
_URL_USERINFO = re.compile(r"://[^/\s@'\"]+@")


class Redactor:
    """Replaces every configured secret value (also as it appears inside a JSON string)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len,
                               reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            for form in {secret, json.dumps(secret)[1:-1]}:
                text = text.replace(form, MASK)
        return text


def without_url_userinfo(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host`` wherever it appears in ``text``."""
    return _URL_USERINFO.sub(f"://{MASK}@", text)
