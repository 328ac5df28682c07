"""Taking secrets out of text that leaves the process: logs, error messages, failure reasons.

One place for the rule, so the service's JSON logs and an adapter that quotes a subprocess's
output (pip) mask the same things the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"
_MIN_SECRET = 4  # shorter values would mask ordinary words
# user:password@ or token@ in any URL; a URL's userinfo is a credential in every scheme we meet.
# Up to the last "@" before the host's end, as urlsplit and HTTP clients split a password
# holding an unescaped "@" ("https://alice:p@ss@host": the password is "p@ss").
_URL_USERINFO = re.compile(r"://[^/\s'\"?#]*@")
# name=value pairs in a URL's query or a libpq keyword string, the name perhaps
# percent-encoded ("pass%77ord=", which libpq decodes to password=).
_PARAM = re.compile(r"(?<![^?&\s])([^=&?\s]+)=([^&\s]*)")


class Redactor:
    """Replaces every configured secret value (also as it appears inside a JSON string)."""

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


def without_url_userinfo(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host`` wherever it appears in ``text``."""
    return _URL_USERINFO.sub(f"://{MASK}@", text)


def password_param(name: str) -> bool:
    """Whether a URL query or libpq parameter ``name`` sets a password once decoded."""
    return unquote(name).strip().lower() == "password"


def without_password_params(text: str) -> str:
    """Every ``password=…`` parameter in ``text`` (a URL's query, a libpq keyword string)
    masked, its name percent-encoded or not."""
    return _PARAM.sub(lambda found: f"{found[1]}={MASK}" if password_param(found[1])
                      else found[0], text)
