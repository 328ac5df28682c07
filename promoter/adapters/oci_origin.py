"""The registry's origin (scheme, host, port): credentials and upload sessions stay on it.

A registry steers uploads with ``Location`` headers (usually relative). Following one to
another origin would hand that host the registry credentials the auth flow attaches and the
blob's bytes; following one from https to http would send both in clear. Such a Location is
refused; the auth flow (``oci_auth``) also attaches credentials only on the registry's origin.
"""

from __future__ import annotations

import httpx

from promoter.errors import PermanentError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: httpx.URL | str) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port made explicit, so ``https://r.io`` and
    ``https://r.io:443`` are the same origin."""
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)


def same_origin(url: httpx.URL | str, base_url: httpx.URL | str) -> bool:
    return origin(url) == origin(base_url)


def origin_text(url: httpx.URL | str) -> str:
    """The origin only: never the path, query or user info, which may carry secrets."""
    scheme, host, port = origin(url)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def upload_location(registry: str, base_url: str, response: httpx.Response, what: str) -> str:
    """The absolute URL of the upload session ``response`` points to, resolved against the
    URL that answered (relative Locations are the norm); refused on another origin."""
    value = response.headers.get("Location")
    if not value:
        raise PermanentError(f"the registry sent no upload Location while {what}")
    location = response.url.join(value)
    if not same_origin(location, base_url):
        raise PermanentError(
            f"registry {registry} sent an upload Location on another origin "
            f"({origin_text(location)}, expected {origin_text(base_url)}) while {what}; "
            "promoter sends neither credentials nor blobs there",
            hint="the registry (or a proxy in front of it) advertises the wrong public URL; "
                 "check its configured host (distribution: http.host)")
    return str(location)
