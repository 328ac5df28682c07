"""A registry that points uploads elsewhere, and the elsewhere that records what reaches it.

The real registry cannot be told to answer with a foreign ``Location``, so this stand-in speaks
the distribution spec's upload flow (Basic auth challenge, ``HEAD`` blob 404, ``POST`` 202 with
a ``Location``, ``PATCH`` 202, ``PUT ?digest=`` 201, ``DELETE`` 204, blob ``GET`` redirected to
storage) with the upload ``Location`` a test chooses. The foreign host listens on another
loopback address (127.0.0.2), so it is another origin, and answers every request with an auth
challenge: a client that answered it would show up with credentials in ``requests``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.image.serving import serving

USER, PASSWORD = "alice", "s3cret-pw"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class Host:
    address: str = ""
    requests: list[Seen] = field(default_factory=list)
    upload_location: str = ""  # the registry's answer to POST …/blobs/uploads/

    @property
    def url(self) -> str:
        return f"http://{self.address}"


class _Recording(BaseHTTPRequestHandler):
    host: Host

    def log_message(self, *_: object) -> None:
        pass

    def _record(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.host.requests.append(Seen(self.command, self.path,
                                       self.headers.get("Authorization")))

    def _answer(self, status: int, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Foreign(_Recording):
    """Blob storage or an attacker: challenges everyone, Basic or Bearer with its own realm."""

    def _any(self) -> None:
        self._record()
        if urlsplit(self.path).path == "/token":
            self._answer(401)
        elif self.path.startswith("/bucket"):
            self._answer(401, WWW_Authenticate=f'Bearer realm="{self.host.url}/token",scope="x"')
        else:
            self._answer(401, WWW_Authenticate='Basic realm="foreign"')

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = _any


class _Registry(_Recording):
    storage: Host

    def _any(self) -> None:
        self._record()
        path = urlsplit(self.path).path
        if self.headers.get("Authorization") != BASIC:
            self._answer(401, WWW_Authenticate='Basic realm="standin"')
        elif self.command == "HEAD":
            self._answer(404)
        elif self.command == "GET" and "/blobs/" in path:
            self._answer(307, Location=f"{self.storage.url}/bucket/blob")
        elif self.command == "POST":
            self._answer(202, Location=self.host.upload_location)
        elif self.command == "PATCH":
            self._answer(202, Location=path + "?_state=after-patch")
        elif self.command == "PUT" and "digest=" in self.path:
            self._answer(201)
        elif self.command == "DELETE":
            self._answer(204)
        else:
            self._answer(400)

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = _any


@contextmanager
def _serve(handler: type[_Recording], bind: str, host: Host) -> Iterator[None]:
    with serving(type("Handler", (handler,), {"host": host}), bind) as server:
        host.address = f"{bind}:{server.server_address[1]}"
        yield


@contextmanager
def registry_and_foreign_host() -> Iterator[tuple[Host, Host]]:
    """(registry on 127.0.0.1, foreign host on 127.0.0.2); the registry's blob GETs redirect
    to the foreign host, as registries backed by object storage do."""
    registry, foreign = Host(), Host()
    with _serve(_Foreign, "127.0.0.2", foreign):
        registry_handler = type("Registry", (_Registry,), {"storage": foreign})
        with _serve(registry_handler, "127.0.0.1", registry):
            yield registry, foreign
