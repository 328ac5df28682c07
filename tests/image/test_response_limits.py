"""Answers from a hostile registry are read only up to a cap: a stand-in registry that would
send a gigabyte for a manifest, blob, token or error body, and counts what it got rid of."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest

from promoter.adapters.oci import RegistryClient
from promoter.errors import PermanentError
from tests.image.serving import serving

GIB = 1024 ** 3
PIECE = b"x" * 65536


@dataclass
class Flood:
    """What the stand-in answers: ``status`` with ``size`` bytes (declared or not)."""

    status: int = 200
    size: int = GIB
    declare_length: bool = True
    challenge: bool = False  # answer 401 Bearer first, pointing at a flooding token realm
    sent: list[int] = field(default_factory=list)


@pytest.fixture
def hostile() -> Iterator[tuple[str, Flood]]:
    flood = Flood()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if flood.challenge and self.path.startswith("/v2/"):
                realm = f"http://127.0.0.1:{server.server_address[1]}/token"
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="r"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(flood.status)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            if flood.declare_length:
                self.send_header("Content-Length", str(flood.size))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            try:
                while sent < flood.size:
                    self.wfile.write(PIECE)
                    sent += len(PIECE)
            except OSError:
                pass  # the client hung up: what it was sent so far is what it cost
            flood.sent.append(sent)
            self.close_connection = True

        def log_message(self, *_: object) -> None:
            pass

    with serving(Handler) as server:
        yield f"127.0.0.1:{server.server_address[1]}", flood


def _sent(flood: Flood) -> int:
    """Bytes the stand-in got rid of before the client hung up (waits for its handler)."""
    for _ in range(100):
        if flood.sent:
            return flood.sent[0]
        threading.Event().wait(0.05)
    raise AssertionError("the stand-in is still sending: the client did not stop reading")


# Loopback socket buffers hold some MiB the client never reads; a gigabyte is far beyond them.
STOPPED_EARLY = 64 * 1024 * 1024


@pytest.mark.parametrize("declare_length", [True, False])
def test_an_oversized_manifest_is_refused_without_reading_it_all(
        hostile: tuple[str, Flood], declare_length: bool) -> None:
    address, flood = hostile
    flood.declare_length = declare_length
    with RegistryClient(address, attempts=1) as client, pytest.raises(
            PermanentError, match=r"sent more than 4 MiB for manifest base/x:latest"):
        client.get_manifest("base/x", "latest")
    assert _sent(flood) < STOPPED_EARLY


@pytest.mark.parametrize(("read", "refused"), [
    (lambda client: client.get_blob("base/x", "sha256:" + "0" * 64, limit=1000),
     r"more than 1000 bytes for blob sha256:00000000000"),
    (lambda client: client.referrers("base/x", "sha256:" + "0" * 64),
     r"more than 4 MiB for the referrers index"),
], ids=["blob", "referrers"])
def test_an_answer_over_its_limit_is_refused_while_streaming(
        hostile: tuple[str, Flood], read: Callable[[RegistryClient], object],
        refused: str) -> None:
    address, flood = hostile
    flood.declare_length = False
    with RegistryClient(address, attempts=1) as client, pytest.raises(PermanentError,
                                                                      match=refused):
        read(client)
    assert _sent(flood) < STOPPED_EARLY


def test_an_oversized_token_answer_is_refused(hostile: tuple[str, Flood]) -> None:
    address, flood = hostile
    flood.challenge, flood.declare_length = True, False
    with RegistryClient(address, attempts=1) as client, pytest.raises(
            PermanentError, match=rf"more than 256 KiB for a token for {address}"):
        client.get_manifest("base/x", "latest")
    assert _sent(flood) < STOPPED_EARLY


def test_a_huge_error_body_is_cut_short_and_the_status_still_answers(
        hostile: tuple[str, Flood]) -> None:
    address, flood = hostile
    flood.status, flood.declare_length = 404, False
    with RegistryClient(address, attempts=1) as client:
        assert client.get_manifest("base/x", "missing") is None
    assert _sent(flood) < STOPPED_EARLY
