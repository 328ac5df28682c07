"""Slow, malformed and over-the-limit HTTP against a real `promoter serve` on 127.0.0.1.

The listener runs as users run it (a `python -m promoter serve` subprocess, uvicorn + h11) with
small limits from promoter.yaml, so each stalled request is cut off within a few seconds.
Raw sockets, because an HTTP client library would not send these requests. Timing is only
ever "closed within N seconds", with N several times the configured timeout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promoter.service.app import create_app
from promoter.service.queue import JobQueue
from tests.fixtures.mlflow_server import free_port
from tests.fixtures.stack import ServeProcess, promoter_environ, start_serve, write_config
from tests.intake.conftest import make_settings

pytestmark = pytest.mark.e2e

REQUEST_TIMEOUT = 2  # server.request_timeout_seconds of the slow-client server
CLOSED_WITHIN = 15.0  # generous: the server must close a stalled request well before this
WEBHOOK = b"POST /webhooks/mlflow HTTP/1.1\r\nHost: promoter\r\nContent-Type: application/json\r\n"


def serve_with(tmp: Path, **server: Any) -> ServeProcess:
    config = write_config(tmp / "promoter.yaml", state_dir=tmp / "state", mlflow_url=None,
                          extra={"server": server})
    return start_serve(config, promoter_environ(), tmp / "serve.log")


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    process = serve_with(tmp_path_factory.mktemp("hostile-http"),
                         request_timeout_seconds=REQUEST_TIMEOUT, keep_alive_seconds=30,
                         max_connections=500, max_header_bytes=8192)
    yield process
    process.stop()


def connect(serve: ServeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", serve.port), timeout=CLOSED_WITHIN)


def read_until_closed(sock: socket.socket, within: float = CLOSED_WITHIN) -> bytes:
    """Everything the server sends until it closes; fails if it is still open after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"still open after {within} s; got {received[:200]!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def exchange(serve: ServeProcess, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(serve) as sock:
        sock.sendall(request)
        raw = read_until_closed(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


# ------------------------------------------------------------------------- slow clients

def test_partial_headers_are_cut_off_within_the_timeout(serve: ServeProcess) -> None:
    with connect(serve) as sock:
        sock.sendall(WEBHOOK[:40])  # and then nothing
        assert read_until_closed(sock) == b""


def test_a_silent_connection_is_cut_off(serve: ServeProcess) -> None:
    with connect(serve) as sock:
        assert read_until_closed(sock) == b""


def test_headers_trickled_a_byte_at_a_time_are_cut_off(serve: ServeProcess) -> None:
    """Each byte would have reset a per-read idle timer; the deadline is per request."""
    with connect(serve) as sock:
        started = time.monotonic()
        sock.settimeout(1)
        for byte in WEBHOOK:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break  # closed on us: what we wanted
            time.sleep(0.2)
            if time.monotonic() - started > CLOSED_WITHIN:
                pytest.fail("a trickling client kept its connection")
        read_until_closed(sock)
    assert time.monotonic() - started < CLOSED_WITHIN


def test_a_partial_body_is_cut_off_within_the_timeout(serve: ServeProcess) -> None:
    with connect(serve) as sock:
        sock.sendall(WEBHOOK + b"Content-Length: 100\r\n\r\n{\"entity\":")
        answer = read_until_closed(sock)
    assert b" 500 " not in answer and b" 200 " not in answer


def test_many_stalled_clients_are_all_cut_off_and_others_are_served(
        serve: ServeProcess) -> None:
    stalled = [connect(serve) for _ in range(120)]
    try:
        for index, sock in enumerate(stalled):
            sock.sendall(WEBHOOK[:30] if index % 2 else
                         WEBHOOK + b"Content-Length: 50\r\n\r\n{")
        status, _, body = exchange(serve, b"GET /healthz HTTP/1.1\r\nHost: promoter\r\n"
                                          b"Connection: close\r\n\r\n")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        for sock in stalled:
            read_until_closed(sock)
    finally:
        for sock in stalled:
            sock.close()


def test_headers_over_the_size_limit_are_400(serve: ServeProcess) -> None:
    """max_header_bytes bounds what the server buffers of an incomplete request head."""
    with connect(serve) as sock:
        sock.sendall(WEBHOOK + b"X-Padding: " + b"a" * 20_000)  # no end of headers yet
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def fill(serve: ServeProcess, connections: int) -> list[socket.socket]:
    """``connections`` kept-alive connections, each answered once (so each is open and
    counted); the caller closes them."""
    held: list[socket.socket] = []
    for _ in range(connections):
        held.append(connect(serve))
        held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: promoter\r\n\r\n")
        held[-1].settimeout(CLOSED_WITHIN)
        assert held[-1].recv(65536).startswith(b"HTTP/1.1 200 ")  # kept alive: still open
    return held


def test_connections_above_the_cap_get_503(tmp_path: Path) -> None:
    capped = serve_with(tmp_path, request_timeout_seconds=60, max_connections=8)
    held: list[socket.socket] = []
    try:
        held = fill(capped, 8)
        status, _, body = exchange(capped, b"GET /healthz HTTP/1.1\r\nHost: promoter\r\n"
                                           b"Connection: close\r\n\r\n")
        assert status == 503, body
        for sock in held:
            sock.close()
        deadline = time.monotonic() + CLOSED_WITHIN
        while True:  # the server notices the closed connections shortly
            status, _, _ = exchange(capped, b"GET /healthz HTTP/1.1\r\nHost: promoter\r\n"
                                            b"Connection: close\r\n\r\n")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
    finally:
        for sock in held:
            sock.close()
        capped.stop()


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One GET on its own connection (closed after the answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSED_WITHIN) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: promoter\r\nConnection: close\r\n\r\n"
                     .encode())
        raw = read_until_closed(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_probe_port_answers_while_the_webhook_port_is_full(tmp_path: Path) -> None:
    """A flood that fills the webhook port (503 there, /healthz too) must not fail the
    kubelet's probes: server.probe_port serves /healthz, /readyz and /metrics outside that
    cap, with the same handlers, and nothing else."""
    probe_port = free_port()
    capped = serve_with(tmp_path, request_timeout_seconds=60, max_connections=8,
                        probe_port=probe_port)
    held: list[socket.socket] = []
    try:
        held = fill(capped, 8)
        assert http_get(capped.port, "/healthz")[0] == 503  # the webhook port is full
        status, body = http_get(probe_port, "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, body = http_get(probe_port, "/readyz")
        assert status == 200 and json.loads(body)["checks"]["queue"] == "ok"
        status, body = http_get(probe_port, "/metrics")
        assert status == 200 and b"promoter_reconcile_leader" in body
        status, body = http_get(probe_port, "/webhooks/mlflow")
        assert status == 404 and json.loads(body)["error"] == "not_found"
        for sock in held:
            sock.close()
        held = []
        # /metrics (no authentication) is the probe port's alone: the webhook port, which the
        # NetworkPolicy opens to MLflow, the Ingress and Argo CD, does not serve it.
        for _ in range(100):   # until the closed connections have left the cap
            status, body = http_get(capped.port, "/metrics")
            if status != 503:
                break
            time.sleep(0.1)
        assert status == 404 and json.loads(body)["error"] == "not_found"
        assert http_get(capped.port, "/healthz")[0] == 200
    finally:
        for sock in held:
            sock.close()
        assert capped.stop() == 0  # SIGTERM stops both listeners
    with pytest.raises(OSError):  # the probe listener is closed with the process
        http_get(probe_port, "/healthz")


def serve_once(tmp: Path, *options: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp / "promoter.yaml", state_dir=tmp / "state", mlflow_url=None)
    return subprocess.run([sys.executable, "-m", "promoter", "--config", str(config), "serve",
                           *options], env=promoter_environ(), capture_output=True, text=True,
                          timeout=60)


def test_the_probe_port_must_differ_from_the_webhook_port(tmp_path: Path) -> None:
    port = free_port()
    result = serve_once(tmp_path, "--port", str(port), "--probe-port", str(port))
    assert result.returncode == 2, result.stderr
    assert f"the probe port must differ from the webhook port ({port})" in result.stderr


def test_a_taken_probe_port_fails_the_start_with_its_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_once(tmp_path, "--port", str(free_port()), "--probe-port", str(port))
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} for probes: Address already in use" \
        in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------- malformed HTTP

@pytest.mark.parametrize("content_length", [
    b"Content-Length: abc\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 2\r\nContent-Length: 3\r\n",
    b"Content-Length: 1e3\r\n",
])
def test_bad_content_length_is_refused_by_h11_with_400(serve: ServeProcess,
                                                       content_length: bytes) -> None:
    """h11 refuses these before the app runs: 400, text/plain "Invalid HTTP request
    received.", connection closed (README documents it). Never a 5xx."""
    status, headers, body = exchange(serve, WEBHOOK + content_length + b"\r\n{}")
    assert status == 400 and body == b"Invalid HTTP request received."
    assert headers["connection"].lower() == "close"


def test_identical_duplicate_content_length_reaches_the_app(serve: ServeProcess) -> None:
    """RFC 9110 allows repeating the same value; the app then judges the delivery (JSON)."""
    status, headers, body = exchange(serve, WEBHOOK + b"Content-Length: 2\r\nContent-Length: 2"
                                            b"\r\nConnection: close\r\n\r\n{}")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "missing_header"


@pytest.mark.parametrize("path", [b"/webhooks/mlflow/", b"/webhooks/databricks/",
                                  b"/healthz/"])
def test_trailing_slash_is_404_json_not_a_redirect(serve: ServeProcess, path: bytes) -> None:
    method = b"GET" if path == b"/healthz/" else b"POST"
    status, headers, body = exchange(
        serve, method + b" " + path + b" HTTP/1.1\r\nHost: promoter\r\nContent-Type: "
        b"application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert status == 404 and "location" not in headers
    assert json.loads(body)["error"] == "not_found"


@pytest.mark.parametrize(("values", "status", "error"), [
    *(([value], 400, "invalid") for value in (b"abc", b"-1", b"2, 2", b"+2", b"", b"\xb2",
                                              b"\xb9\xb2")),
    ([b"2", b"5"], 400, "invalid"),
    # More digits than int() reads (4300): too large, never a 500 with a traceback.
    ([b"1" * 5000], 413, "too_large"),
    # Leading zeros do not make it large: the app reads on and judges the delivery (unsigned).
    ([b"0" * 5000 + b"2"], 400, "missing_header"),
])
def test_the_app_answers_a_bad_content_length_with_json_4xx(tmp_path: Path, values: list[bytes],
                                                            status: int, error: str) -> None:
    """Behind another server (or proxy) that passes the header through, the app itself
    refuses it: driven over raw ASGI so nothing normalises the header first."""
    settings = make_settings(tmp_path / "state", PROMOTER_MLFLOW_WEBHOOK_SECRET="s")
    queue = JobQueue.open(settings.state_dir)
    app = create_app(settings, queue)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/webhooks/mlflow",
             "raw_path": b"/webhooks/mlflow", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"),
                         *((b"content-length", value) for value in values)],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        queue.close()
    assert sent[0]["status"] == status
    answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert answer["error"] == error
    if error == "invalid":
        assert "Content-Length" in answer["detail"]
    assert len(answer["detail"]) < 200, answer
