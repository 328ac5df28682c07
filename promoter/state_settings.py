"""promoter.yaml's ``state`` section: SQLite in the state directory, or a PostgreSQL URL.

The password never lives in the URL (it would sit in promoter.yaml, every process's
environment and error messages): it comes from PROMOTER_STATE_PASSWORD(_FILE) only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from promoter.errors import ConfigError
from promoter.settings_section import Section


class StateSettings(Section):
    """Where promoter keeps its state: absent ``url`` → SQLite in ``state_dir``."""

    url: str | None = Field(
        default=None, description="postgresql://USER@HOST:PORT/DB?sslmode=… to keep all state "
        "in PostgreSQL (password: PROMOTER_STATE_PASSWORD or PROMOTER_STATE_PASSWORD_FILE)")
    sslmode: str | None = Field(default=None, description="libpq sslmode (e.g. verify-full)")
    sslrootcert: str | None = Field(default=None, description="CA bundle to verify the server")
    sslcert: str | None = Field(default=None, description="client certificate (mutual TLS)")
    sslkey: str | None = Field(default=None, description="client certificate's key")
    max_connections: int = Field(default=10, ge=2, le=1000,
                                 description="connections per process in the pool")

    @field_validator("url")
    @classmethod
    def _postgresql_only(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.match(r"^postgres(ql)?://", value):
            raise ValueError("must be a postgresql:// URL (leave it out to use SQLite in "
                             "state_dir)")
        return value  # a password in it was refused before validation (refuse_url_password)

    def tls_options(self) -> tuple[tuple[str, str], ...]:
        names = ("sslmode", "sslrootcert", "sslcert", "sslkey")
        return tuple((name, str(getattr(self, name))) for name in names
                     if getattr(self, name) is not None)


def refuse_url_password(raw: Mapping[str, Any]) -> None:
    """A password in state.url would sit in promoter.yaml, the environment of every process
    and error messages: refuse it (before validation, whose messages quote the value)."""
    from urllib.parse import parse_qsl, urlsplit

    from promoter.redaction import password_param

    url = (raw.get("state") or {}).get("url") if isinstance(raw.get("state"), Mapping) else None
    if not isinstance(url, str):
        return
    try:
        parts = urlsplit(url)
        # libpq decodes the parameter names too: pass%77ord= sets the password.
        has_password = parts.password is not None or any(
            password_param(name) for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    except ValueError as exc:  # e.g. an IPv6 host without its closing bracket
        # Not quoted: a malformed URL may still hold a password.
        raise ConfigError(f"state.url is not a well-formed URL ({exc})",
                          hint="postgresql://USER@HOST:PORT/DATABASE[?sslmode=…]; an IPv6 "
                               "host goes in brackets: [::1]") from None
    if has_password:
        raise ConfigError("state.url must not contain a password",
                          hint="set PROMOTER_STATE_PASSWORD (or PROMOTER_STATE_PASSWORD_FILE) "
                               "and leave the password out of the URL")
