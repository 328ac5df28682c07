"""The PostgreSQL connection string: TLS options pass through, the password stays apart.

The password comes from PROMOTER_STATE_PASSWORD (or its _FILE), never from the URL, so it is
neither in promoter.yaml nor in a process listing; ``redact`` is applied to every message
that names the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promoter.errors import ConfigError
from promoter.redaction import password_param, without_password_params

# What libpq accepts for sslmode; it checks only when connecting, where a refusal looks like
# an outage (a TransientError, retried) instead of the typo it is.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


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


def check(url: str, options: tuple[tuple[str, str], ...] = ()) -> None:
    """ConfigError for what libpq would refuse in ``url`` and ``options`` before connecting: a
    malformed URI or unknown parameter, a port that is no port number, an unknown sslmode."""
    try:
        params = {**conninfo_to_dict(url), **dict(options)}
    except psycopg.ProgrammingError as exc:  # libpq's own URI parser said no
        said = str(exc).splitlines()[0].replace(url, redact(url)) if str(exc) else ""
        raise ConfigError(f"the PostgreSQL URL {redact(url)} is malformed: "
                          f"{without_password_params(said)}",
                          hint="postgresql://USER@HOST:PORT/DATABASE[?sslmode=…]") from None
    for port in str(params.get("port") or "").split(","):  # one per host: h1:5432,h2:5433
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"the PostgreSQL URL {redact(url)} has port {port!r}, which is "
                              "not a port number")
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise ConfigError(f"sslmode {sslmode!r} of the PostgreSQL state is not one libpq "
                          f"knows", hint="one of " + ", ".join(SSLMODES))


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
