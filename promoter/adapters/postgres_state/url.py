"""The PostgreSQL connection string: TLS options pass through, the password stays apart.

The password comes from PROMOTER_STATE_PASSWORD (or its _FILE), never from the URL, so it is
neither in promoter.yaml nor in a process listing; ``redact`` is applied to every message
that names the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import make_conninfo

_PASSWORD_PARAM = re.compile(r"(?i)(password=)[^&\s]*")


@dataclass(frozen=True)
class StateUrl:
    url: str
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()  # sslmode, sslrootcert, … from promoter.yaml

    def conninfo(self, **extra: str | int) -> str:
        """The libpq connection string (with the password; never log it)."""
        params: dict[str, str | int] = {key: value for key, value in self.options}
        if self.password is not None:
            params["password"] = self.password
        return make_conninfo(self.url, **params, **extra)

    def describe(self) -> str:
        return redact(self.url)

    def scrub(self, text: str) -> str:
        """``text`` with the URL redacted and the password, should a driver echo it, masked."""
        text = text.replace(self.url, self.describe())
        if self.password:
            text = text.replace(self.password, "***")
        return _PASSWORD_PARAM.sub(r"\1***", text)


def redact(url: str) -> str:
    """``url`` without its password (user, host, database and options stay: they help)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_password(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.password is not None or bool(_PASSWORD_PARAM.search(parts.query))
