"""Registry authentication: the ``WWW-Authenticate`` Bearer token flow and Basic auth.

GitLab's container registry (and Docker Hub, GHCR, Harbor) answer 401 with
``Bearer realm=...,service=...,scope=...``; the client asks the realm for a token (sending
Basic credentials when it has them) and repeats the request with it. Credentials come from a
Docker/containers auth file (``~/.docker/config.json`` or the file ``auth_file`` names).

Tokens are short-lived (GitLab's last 5 minutes): each one is kept with its expiry and renewed
before a request that would carry it at or near its end, so a long chunked upload never sends
a PATCH with a stale token (a streamed PATCH body cannot be re-sent after a 401).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from promoter.adapters.oci_limits import TOKEN_LIMIT, body_limit
from promoter.adapters.oci_origin import same_origin
from promoter.errors import AuthError, ConfigError, TransientError

_PARAM = re.compile(r'(\w+)="([^"]*)"')
DEFAULT_TOKEN_SECONDS = 60.0  # the distribution token spec's default when expires_in is absent
_RENEW_MARGIN = 10.0  # renew this long before expiry (less for tokens shorter than 40 s)


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
            # The first entry holding credentials: a credential helper leaves an empty one
            # ("https://index.docker.io/v1/": {}) that must not hide skopeo's "docker.io".
            entry: dict[str, Any] = next((auths[key] for key in _auth_keys(registry)
                                          if (auths.get(key) or {}).get("auth")), {})
            if not entry.get("auth"):
                return None
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, AttributeError, UnicodeDecodeError):
            raise ConfigError(f"registry auth file {path} is not valid JSON with base64 "
                              "'auths' entries", hint="run skopeo login again") from None
        return Credentials(username, password)
    return None


# Docker Hub's API host is not the name logins store its credentials under: `docker login`
# writes "https://index.docker.io/v1/", `skopeo login` / `podman login` write "docker.io".
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "docker.io", "index.docker.io",
                    "registry-1.docker.io")


def _auth_keys(registry: str) -> tuple[str, ...]:
    """The auths entries that may hold ``registry``'s credentials, most specific first."""
    if registry in _DOCKER_HUB_KEYS:
        return _DOCKER_HUB_KEYS
    return registry, f"https://{registry}"


def scope_key(scope: str) -> str:
    """One key for the same rights however a challenge orders them: distribution asks for
    `repository:r:push,pull` on one request and `repository:r:pull,push` on the next."""
    def one(item: str) -> str:
        resource, _, actions = item.rpartition(":")
        return f"{resource}:{','.join(sorted(actions.split(',')))}" if resource else item
    return " ".join(sorted(one(item) for item in scope.split()))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


@dataclass(frozen=True)
class _Token:
    value: str
    challenge: dict[str, str]  # the Bearer challenge it answered: enough to ask for a new one
    lifetime: float  # seconds, from when it was received
    expires_at: float  # time.monotonic()

    def expiring(self) -> bool:
        margin = min(_RENEW_MARGIN, self.lifetime / 4)
        return time.monotonic() >= self.expires_at - margin


def token_lifetime(body: dict[str, Any], now: float) -> float:
    """Seconds a token answer stays valid from ``now`` (wall clock): ``expires_in`` (60 s when
    absent, as the spec says) counted from ``issued_at`` when given, as docker's client does,
    since a token service may hand out a cached token that is already partly used up."""
    expires_in = body.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) \
            or expires_in <= 0:
        expires_in = DEFAULT_TOKEN_SECONDS
    issued_at = body.get("issued_at")
    age = 0.0
    if isinstance(issued_at, str):
        # Unparsable (e.g. nanosecond precision): count from receipt instead.
        with contextlib.suppress(ValueError):
            age = now - datetime.fromisoformat(issued_at).timestamp()
    # A clock ahead of the service's could make every token look expired; then each request
    # renews its token, which costs a request but never sends a stale one.
    return float(expires_in) - min(max(age, 0.0), float(expires_in))


class RegistryAuth(httpx.Auth):
    """httpx auth flow: try the cached token, answer a 401 challenge once, then give up.

    Credentials go only to the registry's own origin (``base_url``): a request to any other
    host (an upload Location, a storage redirect's challenge) never gets them.
    """

    def __init__(self, registry: str, credentials: Credentials | None, base_url: str) -> None:
        self._registry = registry
        self._credentials = credentials
        self._base_url = base_url
        self._tokens: dict[str, _Token] = {}  # scope → bearer token
        self._last_header: str | None = None
        self._last_token: _Token | None = None  # the token behind _last_header, if Bearer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not same_origin(request.url, self._base_url):
            yield request
            return
        if self._last_token is not None and self._last_token.expiring():
            # Renew before sending rather than after a 401: a streamed body (an upload
            # PATCH) cannot be sent twice.
            renewed = yield from self._fetch_token(self._last_token.challenge)
            self._last_header, self._last_token = f"Bearer {renewed.value}", renewed
        if self._last_header:
            request.headers["Authorization"] = self._last_header
        response = yield request
        # response.url is the last hop: a 401 from a redirect target on another origin (blob
        # storage) is not ours to answer with the registry's credentials.
        if response.status_code != 401 or not same_origin(response.url, self._base_url):
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self._credentials is None:
                raise self._no_credentials()
            header = self._credentials.basic_header()
            self._last_token = None
        elif scheme == "bearer":
            token = self._tokens.get(scope_key(params.get("scope", "")))
            # A token cached for the scope serves a request that carried another one (moving
            # between repositories); never when the registry calls the token invalid: a token
            # can die before its announced expiry (revoked, a clock ahead), and an older one
            # cached for the same rights is no better.
            if token is None or token.expiring() or params.get("error") == "invalid_token" \
                    or f"Bearer {token.value}" == request.headers.get("Authorization"):
                token = yield from self._fetch_token(params)
            self._last_token = token
            header = f"Bearer {token.value}"
        else:
            return
        self._last_header = header
        request.headers["Authorization"] = header
        yield request

    def _fetch_token(self, params: dict[str, str]
                     ) -> Generator[httpx.Request, httpx.Response, _Token]:
        token_response = yield self._token_request(params)
        received = time.monotonic()
        value, lifetime = self._read_token(token_response)
        token = _Token(value, params, lifetime, received + lifetime)
        self._tokens[scope_key(params.get("scope", ""))] = token
        return token

    def _token_request(self, params: dict[str, str]) -> httpx.Request:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self._registry} sent a Bearer challenge without a realm")
        scheme = httpx.URL(realm).scheme
        # The realm gets the Basic credentials and hands out the token: it may be plain HTTP
        # only when the registry itself is (loopback or image.insecure_registries, the rule
        # RegistryClient picks its base URL by), else they would cross the network in clear.
        # An anonymous request carries nothing to protect (what it pulls is checked by digest),
        # so a public image behind a proxy whose challenge says http:// still pulls.
        plain_ok = scheme == "http" and (httpx.URL(self._base_url).scheme == "http"
                                         or self._credentials is None)
        if scheme != "https" and not plain_ok:
            raise AuthError(f"registry {self._registry} names a token service that is not "
                            f"HTTPS ({scheme}://{httpx.URL(realm).host}); promoter sends no "
                            "credentials there",
                            hint="serve the registry's token realm over HTTPS (or, for a "
                                 "registry that is itself plain HTTP, list it in "
                                 "image.insecure_registries)")
        query = {key: params[key] for key in ("service", "scope") if params.get(key)}
        # Uncompressed, as the client's own requests: the body cap counts real bytes.
        headers = {"Accept-Encoding": "identity"}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.basic_header()
        return httpx.Request("GET", realm, params=query, headers=headers,
                             extensions=body_limit(TOKEN_LIMIT, f"a token for {self._registry}"))

    def _read_token(self, response: httpx.Response) -> tuple[str, float]:
        """The token and its lifetime in seconds from now."""
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
        return str(token), token_lifetime(body, time.time())

    def _no_credentials(self) -> AuthError:
        return AuthError(f"registry {self._registry} requires credentials and none are set",
                         hint=f"log in with `skopeo login {self._registry}` (writes an auth "
                              "file) or set image.auth_file in promoter.yaml")
