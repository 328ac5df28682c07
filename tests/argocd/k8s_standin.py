"""An HTTP stand-in of the Kubernetes API for Argo CD ``Application`` objects, on 127.0.0.1.

Serves what the ``kubernetes`` client calls for custom objects, with the API server's shapes:
``GET /apis/argoproj.io/v1alpha1/namespaces/<ns>/applications`` (an ``ApplicationList`` with
``metadata.resourceVersion``; ``labelSelector`` with ``key`` and ``key=value`` terms), and the
same path with ``watch=true``: a chunked stream of ``{"type", "object"}`` lines for the events
queued after ``resourceVersion``, ended after ``timeoutSeconds`` or when the queue is drained.
Bearer-token auth: anything else is 401 with a ``Status`` body.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/apis/argoproj.io/v1alpha1/namespaces/"


def _matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if key not in labels or ("=" in term and labels[key] != value):
            return False
    return True


class KubeStandin:
    def __init__(self, token: str = "standin-token") -> None:
        self.token = token
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.version = 100
        self.requests: list[str] = []
        self.expired_before = 0   # watches from an older resourceVersion get 410 Expired
        self._lock = threading.Lock()

    def put(self, namespace: str, app: dict[str, Any], kind: str | None = None) -> None:
        with self._lock:
            self.version += 1
            stored = copy.deepcopy(app)
            stored["metadata"]["namespace"] = namespace
            stored["metadata"]["resourceVersion"] = str(self.version)
            key = (namespace, stored["metadata"]["name"])
            event = kind or ("MODIFIED" if key in self.objects else "ADDED")
            self.objects[key] = stored
            self.events.append((self.version, event, stored))

    def delete(self, namespace: str, name: str) -> None:
        """The object goes: a DELETED event with its last state (as the API server sends for
        an object with no finalizer left: no deletionTimestamp when there was none)."""
        with self._lock:
            self.version += 1
            stored = self.objects.pop((namespace, name))
            self.events.append((self.version, "DELETED", stored))

    def kubeconfig(self, path: Path, port: int) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin",
                          "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "reader", "user": {"token": self.token}}],
            "contexts": [{"name": "standin",
                          "context": {"cluster": "standin", "user": "reader"}}]}))
        return path

    def handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                standin.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {standin.token}":
                    self._json(401, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                     "status": "Failure", "message": "Unauthorized",
                                     "reason": "Unauthorized", "code": 401})
                    return
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                parts = url.path.removeprefix(PREFIX).split("/")
                if not url.path.startswith(PREFIX) or len(parts) != 2 or \
                        parts[1] != "applications":
                    self._json(404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                     "status": "Failure", "reason": "NotFound", "code": 404,
                                     "message": "the server could not find the requested "
                                                "resource"})
                    return
                namespace, selector = parts[0], query.get("labelSelector", "")
                if query.get("watch") in ("true", "1", "True"):
                    self._watch(namespace, selector, int(query.get("resourceVersion") or 0),
                                float(query.get("timeoutSeconds") or 5))
                    return
                with standin._lock:
                    items = [o for (ns, _), o in sorted(standin.objects.items())
                             if ns == namespace and
                             _matches(selector, o["metadata"].get("labels") or {})]
                    version = str(standin.version)
                self._json(200, {"apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationList",
                                 "metadata": {"resourceVersion": version}, "items": items})

            def _watch(self, namespace: str, selector: str, since: int,
                       timeout: float) -> None:
                """Stream events newer than ``since`` as they happen, until ``timeout``."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if standin.expired_before and since < standin.expired_before:
                    self._chunk({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": f"too old resource version: {since}"}})
                    since = 1 << 62
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    with standin._lock:
                        events = [(version, kind, obj) for version, kind, obj in standin.events
                                  if version > since
                                  and obj["metadata"]["namespace"] == namespace
                                  and _matches(selector, obj["metadata"].get("labels") or {})]
                    for version, kind, obj in events:
                        self._chunk({"type": kind, "object": obj})
                        since = version
                    time.sleep(0.05)
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            def _chunk(self, event: dict[str, Any]) -> None:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()

        return Handler


@contextmanager
def serve(standin: KubeStandin) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), standin.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
