"""A GitLab REST v4 stand-in: real HTTP in a thread, a real git repository behind it.

Only the endpoints promoter uses, with GitLab's JSON shapes, status codes, error bodies and
pagination headers (checked against tests/gitlab/recorded/ by test_recorded.py). A ``profile``
picks the GitLab it plays: CE/Free or Premium, and the era of the merge API (state.Profile).
Routes match the raw request path, so ``%2F`` inside a branch or project path stays one path
segment exactly as on GitLab. Faults are injected per method and path.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.gitlab.standin.gitrepo import ApiError, GitRepo
from tests.gitlab.standin.routes import ROUTES, Api
from tests.gitlab.standin.state import ALL_PROFILES, PROJECT_ID, Profile, Project, User


@dataclass
class Fault:
    """``kind``: 429 | 502 | 503 | timeout | lost. ``apply``: run the request first (502/503)."""

    method: str
    path: str                  # regex searched in the raw path
    kind: str
    times: int = 1
    retry_after: int = 1
    delay: float = 1.0         # timeout: seconds before answering (longer than the client waits)
    apply: bool = False
    after: int = 0             # let this many matching requests through first
    hits: int = 0
    seen: int = 0


@dataclass
class Delivery:
    event: str
    headers: dict[str, str]
    payload: dict[str, Any]
    status: int
    response: Any


class StandIn:
    def __init__(self, root: Path, *, project: str = "group/gitops",
                 profile: Profile | str = "ee-17", per_page: int = 20,
                 tokens: dict[str, str] | None = None, project_id: int = PROJECT_ID) -> None:
        self.profile = ALL_PROFILES[profile] if isinstance(profile, str) else profile
        self.users = {token: User(index + 1, name) for index, (token, name) in
                      enumerate((tokens or {"bot-token": "promoter-bot", "alice-token": "alice",
                                            "bob-token": "bob"}).items())}
        self.repo = GitRepo(root / "gitops.git")
        self.cannot_merge: set[str] = set()   # usernames without merge rights: merge is 401
        # The project's merge method is fast-forward with squash "always": a merge lands one
        # squash commit on the target, merge_commit_sha stays null, squash_commit_sha names it.
        self.squash_merges = False
        self.owners: set[str] = {"alice"}      # the Owner role: may delete an MR
        self.bot_users: set[str] = set()      # project/group access token users (reset_approvals)
        self.cannot_read_approval_settings: set[str] = set()   # GET …/approvals is 403
        self.per_page = per_page
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.deliveries: list[Delivery] = []
        self.commits_created = 0           # every commit the API made, reachable or not
        self.checking_reads = 0            # new MRs report "checking" for this many reads
        self.new_mr_pipeline: str | None = None   # status of a pipeline each new MR starts
        # GitLab aborts auto-merges after a push in a Sidekiq job (RefreshService): True holds
        # them in pending_aborts until api.refresh() runs, as a busy instance does.
        self.defer_refresh = False
        self.pending_aborts: list[tuple[str, str]] = []
        self.hook_url: str | None = None
        self.hook_token: str | None = None
        self.lock = threading.RLock()
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.project = Project(self.repo, project, self.base_url, project_id)
        self.api = Api(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fault(self, method: str, path: str, kind: str, **options: Any) -> Fault:
        added = Fault(method, path, kind, **options)
        self.faults.append(added)
        return added

    # --- hooks -----------------------------------------------------------------------------

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Queue a webhook; it is delivered once the request that caused it is done."""
        self._pending.append((event, payload))

    def flush(self) -> None:
        with self.lock:
            pending, self._pending = self._pending, []
        for event, payload in pending:
            self.deliver(event, payload)

    def deliver(self, event: str, payload: dict[str, Any], key: str | None = None) -> Delivery:
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json", "X-Gitlab-Event": event,
                   "Idempotency-Key": key or str(uuid.uuid4()),
                   "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
                   "X-Gitlab-Event-UUID": str(uuid.uuid4()), "User-Agent": "GitLab/17.11.0"}
        if self.hook_token is not None:
            headers["X-Gitlab-Token"] = self.hook_token
        status, answer = 0, None
        if self.hook_url:
            request = urllib.request.Request(self.hook_url, json.dumps(payload).encode(),
                                             headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status, answer = response.status, json.loads(response.read() or b"null")
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, json.loads(exc.read() or b"null")
        delivery = Delivery(event, headers, payload, status, answer)
        self.deliveries.append(delivery)
        return delivery

    def redeliver(self, delivery: Delivery) -> Delivery:
        """GitLab's retry of a delivery: same Idempotency-Key, new webhook UUID."""
        return self.deliver(delivery.event, delivery.payload,
                            key=delivery.headers["Idempotency-Key"])

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, method: str, raw: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        path, _, query = raw.partition("?")
        with self.lock:
            self.requests.append((method, path))
            fault = self._take_fault(method, path)
        if fault and fault.kind in ("429", "502", "503") and not fault.apply:
            return _fault_answer(fault)
        answer = self._dispatch(method, path, query, headers, body)
        self.flush()
        if fault is None:
            return answer
        if fault.kind == "lost":
            return None
        if fault.kind == "timeout":
            time.sleep(fault.delay)
            return answer
        return _fault_answer(fault)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and re.search(fault.path, path) and fault.hits < fault.times:
                fault.seen += 1
                if fault.seen > fault.after:
                    fault.hits += 1
                    return fault
        return None

    def _dispatch(self, method: str, path: str, query: str, headers: dict[str, str],
                  body: bytes) -> tuple[int, dict[str, str], bytes]:
        user = self.users.get(headers.get("private-token", ""))
        if user is None:
            return _json(401, {"message": "401 Unauthorized"})
        params: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key.endswith("[]"):   # Rails' array parameters (refs[]=a&refs[]=b)
                params.setdefault(key[:-2], []).append(value)
            else:
                params[key] = value
        if body:
            try:
                params.update(json.loads(body))
            except ValueError:
                params.update(urllib.parse.parse_qsl(body.decode()))
        for pattern, verb, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                groups = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                project = groups.pop("project", None)   # None: a route outside projects
                if project is not None and project not in (self.project.path, str(self.project.id)):
                    return _json(404, {"message": "404 Project Not Found"})
                try:
                    with self.lock:
                        status, data = handler(self.api, user, params, **groups)
                except ApiError as exc:
                    return _json(exc.status, exc.body)
                if isinstance(data, list):
                    return self._paginate(status, data, path, params)
                if isinstance(data, bytes):
                    return status, {"Content-Type": "text/plain"}, data
                return _json(status, data)
        return _json(404, {"error": "404 Not Found"})

    def _paginate(self, status: int, items: list[Any], path: str,
                  params: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        per_page = max(1, min(100, int(params.get("per_page") or self.per_page)))
        page = max(1, int(params.get("page") or 1))
        pages = max(1, -(-len(items) // per_page))
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(items)),
                   "X-Total-Pages": str(pages), "X-Prev-Page": str(page - 1) if page > 1 else "",
                   "X-Next-Page": str(page + 1) if page < pages else ""}
        query = {k: v for k, v in params.items() if isinstance(v, str | int)}

        def link(number: int, rel: str) -> str:
            target = urllib.parse.urlencode({**query, "page": number, "per_page": per_page})
            return f'<{self.base_url}{path}?{target}>; rel="{rel}"'

        links = [link(page + 1, "next")] if page < pages else []
        links += [link(page - 1, "prev")] if page > 1 else []
        links += [link(1, "first"), link(pages, "last")]
        headers["Link"] = ", ".join(links)
        chunk = items[(page - 1) * per_page: page * per_page]
        status, json_headers, body = _json(status, chunk)
        return status, {**json_headers, **headers}, body


def _json(status: int, data: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def _fault_answer(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    if fault.kind == "429":
        return 429, {"Retry-After": str(fault.retry_after), "Content-Type": "text/plain"}, \
            b"Retry later\n"
    reason = {"502": b"502 Bad Gateway", "503": b"503 Service Unavailable"}[fault.kind]
    return int(fault.kind), {"Content-Type": "text/html"}, b"<html><body><h1>" + reason + \
        b"</h1></body></html>"


def _handler_for(standin: StandIn) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = standin.handle(self.command, self.path, headers, body)
            if answer is None:  # the response is lost: drop the connection
                self.close_connection = True
                return
            status, extra, payload = answer
            try:
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (timeout fault)
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler
