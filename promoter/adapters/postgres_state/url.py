"""The PostgreSQL connection string: TLS options pass through, the password stays apart.

The password comes from PROMOTER_STATE_PASSWORD (or its _FILE), never from the URL, so it is
neither in promoter.yaml nor in a process listing; ``redact`` is applied to every message
that names the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from psycopg.conninfo import make_conninfo

from promoter.redaction import password_param, without_password_params


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
        return without_password_params(text)


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
    query = without_password_params(parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_password(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.password is not None or any(
        password_param(name) for name, _ in parse_qsl(parts.query, keep_blank_values=True))
