"""Registry authentication: the ``WWW-Authenticate`` Bearer token flow and Basic auth.

GitLab's container registry (and Docker Hub, GHCR, Harbor) answer 401 with
``Bearer realm=...,service=...,scope=...``; the client asks the realm for a token (sending
Basic credentials when it has them) and repeats the request with it. Credentials come from a
Docker/containers auth file (``~/.docker/config.json`` or the file ``auth_file`` names).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import httpx

from promoter.adapters.oci_limits import TOKEN_LIMIT, body_limit
from promoter.errors import AuthError, ConfigError, TransientError

_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='********')"

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def credentials_from_auth_file(registry: str, auth_file: Path | None = None) -> Credentials | None:
    """Look ``registry`` up in an auth file (the format docker login / skopeo login write)."""
    candidates = [auth_file] if auth_file else [Path.home() / ".docker" / "config.json"]
    for path in candidates:
        if not path.is_file():
            if auth_file:
                raise ConfigError(f"registry auth file {path} does not exist")
            continue
        try:
            auths = json.loads(path.read_text(encoding="utf-8")).get("auths", {})
            entry = auths.get(registry) or auths.get(f"https://{registry}") or {}
            if not entry.get("auth"):
                return None
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, AttributeError, UnicodeDecodeError):
            raise ConfigError(f"registry auth file {path} is not valid JSON with base64 "
                              "'auths' entries", hint="run skopeo login again") from None
        return Credentials(username, password)
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


class RegistryAuth(httpx.Auth):
    """httpx auth flow: try the cached token, answer a 401 challenge once, then give up."""

    def __init__(self, registry: str, credentials: Credentials | None) -> None:
        self._registry = registry
        self._credentials = credentials
        self._tokens: dict[str, str] = {}  # scope → bearer token
        self._last_header: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._last_header:
            request.headers["Authorization"] = self._last_header
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self._credentials is None:
                raise self._no_credentials()
            header = self._credentials.basic_header()
        elif scheme == "bearer":
            scope = params.get("scope", "")
            token = self._tokens.get(scope)
            if token is None or f"Bearer {token}" == request.headers.get("Authorization"):
                token_response = yield self._token_request(params)
                token = self._read_token(token_response)
                self._tokens[scope] = token
            header = f"Bearer {token}"
        else:
            return
        self._last_header = header
        request.headers["Authorization"] = header
        yield request

    def _token_request(self, params: dict[str, str]) -> httpx.Request:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self._registry} sent a Bearer challenge without a realm")
        query = {key: params[key] for key in ("service", "scope") if params.get(key)}
        headers = {}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.basic_header()
        return httpx.Request("GET", realm, params=query, headers=headers,
                             extensions=body_limit(TOKEN_LIMIT, f"a token for {self._registry}"))

    def _read_token(self, response: httpx.Response) -> str:
        response.read()
        if response.status_code in (401, 403):
            if self._credentials is None:
                raise self._no_credentials()
            raise AuthError(f"the token service of registry {self._registry} refused the "
                            f"credentials of user {self._credentials.username!r} "
                            f"(HTTP {response.status_code})",
                            hint="check the user and password/token in the registry auth file")
        if response.status_code >= 500:
            raise TransientError(f"the token service of registry {self._registry} failed "
                                 f"(HTTP {response.status_code})")
        try:
            body = response.json()
            token = body.get("token") or body["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise AuthError(f"the token service of registry {self._registry} answered "
                            f"HTTP {response.status_code} without a token") from None
        return str(token)

    def _no_credentials(self) -> AuthError:
        return AuthError(f"registry {self._registry} requires credentials and none are set",
                         hint=f"log in with `skopeo login {self._registry}` (writes an auth "
                              "file) or set image.auth_file in promoter.yaml")
