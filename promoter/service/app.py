"""The HTTP service: signed registry webhooks in, durable jobs out; health and metrics.

``POST /webhooks/mlflow`` and ``POST /webhooks/databricks`` check, in order: content type
(415), size read incrementally (413), headers and signature over exactly the received bytes
(400/401), JSON and its schema (400). Then the payload is normalised (promoter.core.events) and
each actionable event is enqueued; the answer is sent only after ``await queue.enqueue_async``
returned, i.e. the delivery is durable. Every rejection is a 4xx ``{"error", "detail"}``; a
5xx (503) only when the queue itself cannot store the delivery, so the sender retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promoter.core import events
from promoter.core.events import PromotionEvent
from promoter.errors import PromoterError, TransientError, UserError
from promoter.ports.clock import Clock, SystemClock
from promoter.service import argocd_hook, intake, verify
from promoter.service.gitlab_hook import GitLabHookHandler, starlette_endpoint
from promoter.service.hook_http import (
    NOT_CONFIGURED_WARNING_SECONDS,
    RETRY_AFTER_SECONDS,
    STATE_FAILURES,
    state_unavailable,
)
from promoter.service.logs import OncePer, log
from promoter.service.metrics import CONTENT_TYPE, Metrics
from promoter.service.public_errors import public_reason
from promoter.service.thread_lanes import (
    HOOK_THREADS,
    METRICS_THREADS,
    MLFLOW_REPORT_THREADS,
    READINESS_THREADS,
    Lane,
)
from promoter.state.db import ensure_state_dir

if TYPE_CHECKING:
    from promoter.ports.registry import Registry
    from promoter.service.queue import JobQueue
    from promoter.settings import Settings

_log = logging.getLogger("promoter.intake")
# /readyz runs its probes together and answers within the kubelet's 5 s probe timeout
# (deploy/base/deployment.yaml); MLflow's state is only reported, so it gets less.
READY_TIMEOUT_SECONDS = 4.0
MLFLOW_REPORT_TIMEOUT_SECONDS = 2.0
WRITE_FAILURE_MEMORY_SECONDS = 60.0  # /readyz stays not-ready this long after a failed store
_PROBE_BYTES = b"promoter readiness probe\n" * 160  # 4,000 bytes: needs a new data block

_MLFLOW_SCHEMA = {
    "type": "object",
    "required": ["entity", "action", "data"],
    "properties": {"entity": {"type": "string", "maxLength": 64},
                   "action": {"type": "string", "maxLength": 64},
                   "timestamp": {"type": "string", "maxLength": 64},
                   "data": {"type": "object"}},
}
_DATABRICKS_SCHEMA = {
    "type": "object",
    # event_timestamp is Databricks' only bound on a replay (it sends no timestamp header).
    "required": ["event", "event_timestamp"],
    "properties": {"event": {"type": "string", "maxLength": 128},
                   "event_timestamp": {"type": "integer", "minimum": 0},
                   "model_name": {"type": "string", "maxLength": events.MAX_NAME},
                   "version": {"type": ["string", "integer"]},
                   "to_stage": {"type": ["string", "null"]},
                   "from_stage": {"type": ["string", "null"]}},
}
_VALIDATORS = {name: jsonschema.Draft202012Validator(schema)
               for name, schema in (("mlflow", _MLFLOW_SCHEMA),
                                    ("databricks", _DATABRICKS_SCHEMA))}


class TooLarge(UserError):
    http_status = 413
    kind = "too_large"


class UnsupportedMediaType(UserError):
    http_status = 415
    kind = "unsupported_media_type"


def create_app(settings: Settings, queue: JobQueue, registry: Registry | None = None, *,
               metrics: Metrics | None = None, clock: Clock | None = None,
               gitlab_hook: GitLabHookHandler | None = None,
               restart_reason: Callable[[], str | None] | None = None) -> Starlette:
    """The webhook and probe app. ``restart_reason`` (worker.stuck_workers over the serve
    process's workers) tells /healthz why the process can no longer do its work, so the
    liveness probe restarts it; None while all is well."""
    metrics = metrics or Metrics()
    metrics.watch_queue(queue.counts_by_state)
    if gitlab_hook is not None:
        metrics.watch_kept_deliveries(gitlab_hook.kept_deliveries)
    clock = clock or SystemClock()
    triggers = intake.triggers(settings)
    limit = settings.server.max_body_bytes
    tolerance = settings.server.timestamp_tolerance_seconds
    mlflow_secret = settings.secret("PROMOTER_MLFLOW_WEBHOOK_SECRET")
    databricks_secret = settings.secret("PROMOTER_DATABRICKS_WEBHOOK_SECRET")

    def check_mlflow(headers: Mapping[str, str], body: bytes) -> str:
        return verify.verify_mlflow(headers, body, mlflow_secret.reveal() if mlflow_secret
                                    else None, now=clock.now(), tolerance_seconds=tolerance)

    def check_databricks(headers: Mapping[str, str], body: bytes) -> None:
        verify.verify_databricks(headers, body,
                                 databricks_secret.reveal() if databricks_secret else None)

    writes = WriteHealth(Path(settings.state_dir), clock)
    not_configured_warnings = OncePer(NOT_CONFIGURED_WARNING_SECONDS)
    # Each kind of blocking work on threads of its own (thread_lanes): hooks stuck on GitLab or
    # MLflow never delay the readiness checks, nor a hanging MLflow the queue's check.
    hook_threads = Lane("hooks", HOOK_THREADS)
    readiness_threads = Lane("readiness", READINESS_THREADS)
    mlflow_report_threads = Lane("mlflow-report", MLFLOW_REPORT_THREADS)
    metrics_threads = Lane("metrics", METRICS_THREADS)

    async def receive(request: Request, source: str) -> Response:
        started = time.perf_counter()
        delivery_id: str | None = None
        try:
            _check_content_type(request)
            body = await _read_body(request, limit)
            if source == "mlflow":
                delivery_id = check_mlflow(request.headers, body)
            else:
                check_databricks(request.headers, body)
            payload = _parse(body, source)
            if source == "mlflow":
                normalised = events.from_mlflow(payload, triggers)
            else:
                normalised = events.from_databricks(payload, triggers)
                verify.check_databricks_age(payload["event_timestamp"], now=clock.now())
                # No delivery id from Databricks: the transition's identity is the dedupe key.
                delivery_id = verify.dedupe_key_digest(events.dedupe_key_databricks(payload))
            try:
                stored = await intake.enqueue_async(queue, normalised, source=source,
                                                    delivery_id=delivery_id)
            except STATE_FAILURES as exc:
                writes.failed(exc)
                raise
            if stored:
                writes.succeeded()
        except ClientDisconnect:  # the sender gave up mid-body; nobody reads this answer
            return _reject(metrics, source, "disconnected", 400, "disconnected",
                           "the client disconnected before the body was complete", delivery_id,
                           started)
        except STATE_FAILURES as exc:
            log(_log, logging.ERROR, "the job queue cannot store a delivery", source=source,
                error=str(exc))  # the full reason, paths included, goes to the log only
            status, answer = state_unavailable(exc, "the job queue cannot store the delivery")
            return _reject(metrics, source, "queue_down", status, answer["error"],
                           answer["detail"], delivery_id, started,
                           retry_after=RETRY_AFTER_SECONDS)
        except verify.SecretNotConfigured as exc:
            # 503 so the sender retries once the secret is set, but a WARNING (said once a
            # while), not an ERROR: nothing failed, and its own metrics outcome tells it apart.
            return _reject(metrics, source, exc.kind, exc.http_status, exc.kind,
                           f"{exc.message} ({exc.hint})", delivery_id, started,
                           retry_after=RETRY_AFTER_SECONDS,
                           level=logging.WARNING if not_configured_warnings.due(source)
                           else None)
        except PromoterError as exc:
            detail = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            return _reject(metrics, source, exc.kind, exc.http_status, exc.kind, detail,
                           delivery_id, started)
        outcome = _outcome(normalised, stored)
        metrics.delivery(source, outcome)
        metrics.ack_seconds.labels(source=source).observe(time.perf_counter() - started)
        ignored = [e.reason for e in normalised if e.action == "ignore"]
        log(_log, logging.INFO, "delivery accepted", source=source, delivery_id=delivery_id,
            outcome=outcome, jobs=[s.job_id for s in stored], ignored=ignored)
        return JSONResponse({"outcome": outcome, "jobs": [s.describe() for s in stored],
                             "ignored": ignored})

    async def mlflow_hook(request: Request) -> Response:
        return await receive(request, "mlflow")

    async def databricks_hook(request: Request) -> Response:
        return await receive(request, "databricks")

    async def healthz(request: Request) -> Response:
        reason = restart_reason() if restart_reason is not None else None
        if reason is not None:
            return JSONResponse({"status": "stuck", "detail": reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # Ready means a delivery can be stored: that is the acknowledgement a sender gets. An
        # unreachable MLflow is reported, not a reason to leave the Service: stored jobs wait
        # out the outage with the queue's backoff, while GitLab's and Argo CD's deliveries,
        # which need no MLflow to be stored, would otherwise find no endpoint at all.
        probes = [_probe(readiness_threads, queue.ping), _probe(readiness_threads, writes.check)]
        if registry is not None:
            probes.append(_probe(mlflow_report_threads, registry.ping,
                                 MLFLOW_REPORT_TIMEOUT_SECONDS))
        queue_state, writes_state, *mlflow_state = await asyncio.gather(*probes)
        checks = {"queue": queue_state, "state_writes": writes_state,
                  "mlflow": mlflow_state[0] if mlflow_state else "not configured"}
        ready = queue_state == "ok" and writes_state == "ok"
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        body = await metrics_threads.run(metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": kind, "detail": f"{request.method} {request.url.path}: "
                             f"{detail}"}, status_code=status)

    async def disconnected(request: Request, exc: Exception) -> Response:
        # The sender went away mid-body, or was cut off by the request deadline: not a bug, and
        # nobody reads this answer.
        log(_log, logging.WARNING, "client disconnected before the body was complete",
            path=request.url.path)
        return JSONResponse({"error": "disconnected", "detail": "the client disconnected "
                             "before the body was complete"}, status_code=400)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # A bug, not a rejection: 500 makes the sender retry, and nothing was acknowledged.
        _log.error("unexpected error on %s %s: %s", request.method, request.url.path,
                   type(exc).__name__, exc_info=exc)
        return JSONResponse({"error": "internal", "detail": "unexpected error; see the logs"},
                            status_code=500)

    app = Starlette(routes=[
        Route("/webhooks/mlflow", mlflow_hook, methods=["POST"]),
        Route("/webhooks/databricks", databricks_hook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        # A hook whose state database fails marks the replica not ready, as the queue does;
        # one that records a delivery there again makes it ready, as the queue storing one.
        Route("/webhooks/argocd", argocd_hook.endpoint(settings, registry, writes.failed,
                                                       writes.succeeded, lane=hook_threads),
              methods=["POST"]),
        *([Route("/webhooks/gitlab", starlette_endpoint(gitlab_hook, writes.failed,
                                                        writes.succeeded, lane=hook_threads),
                 methods=["POST"])] if gitlab_hook is not None else []),
    ], exception_handlers={HTTPException: http_error, ClientDisconnect: disconnected,
                           Exception: unexpected})
    # No silent 307 from /webhooks/mlflow/ to /webhooks/mlflow: a sender would follow it (or
    # not) without anyone noticing the misconfigured URL. Unknown paths answer 404 JSON.
    app.router.redirect_slashes = False
    return app


def _check_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got "
                                   f"{media_type or 'none'!r:.60}")


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (without reading on) anything larger than ``limit`` bytes."""
    lengths = set(request.headers.getlist("content-length"))
    if len(lengths) > 1:  # which body is meant is ambiguous (request smuggling): refused
        raise UserError("two different Content-Length headers")
    declared = lengths.pop() if lengths else None
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # "²".isdigit() is True
            raise UserError("Content-Length is not a number")
        digits = declared.lstrip("0")
        # Compared by length first: a number with more digits than the limit is larger, and
        # int() refuses more than 4300 digits (ValueError, once a 500 with a traceback).
        if len(digits) > len(str(limit)) or int(digits or "0") > limit:
            raise TooLarge(f"the body is {digits[:20] or '0'}{'…' if len(digits) > 20 else ''}"
                           f" bytes; at most {limit} are accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, source: str) -> Any:
    payload = events.load_json(body)  # UTF-8, depth, integer range: PayloadError (400)
    errors = sorted(_VALIDATORS[source].iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "body"
        raise events.PayloadError(f"{where}: {errors[0].message[:200]}")
    return payload


def _outcome(normalised: list[PromotionEvent], stored: list[intake.Enqueued]) -> str:
    if not stored:
        return "ignored"
    if any(s.created for s in stored):
        return "queued"
    if all(s.duplicate_delivery for s in stored):
        return "duplicate"
    return "covered"  # an existing job already covers it (alias set again)


_BY_STATUS = -1  # _reject's level: WARNING for a 4xx, ERROR for a 5xx


def _reject(metrics: Metrics, source: str, outcome: str, status: int, error: str, detail: str,
            delivery_id: str | None, started: float, retry_after: int | None = None,
            level: int | None = _BY_STATUS) -> Response:
    """The rejection's answer, counted and (unless ``level`` is None) logged."""
    metrics.delivery(source, outcome)
    metrics.ack_seconds.labels(source=source).observe(time.perf_counter() - started)
    if level == _BY_STATUS:
        level = logging.WARNING if status < 500 else logging.ERROR
    if level is not None:
        log(_log, level, "delivery rejected", source=source, delivery_id=delivery_id,
            status=status, error=error, detail=detail)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


async def _probe(lane: Lane, check: Callable[[], None],
                 timeout: float = READY_TIMEOUT_SECONDS) -> str:
    try:
        await asyncio.wait_for(lane.run(check), timeout)
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except (PromoterError, OSError, sqlite3.Error) as exc:
        return public_reason(exc)
    except Exception as exc:  # a probe reports, it does not crash the endpoint
        return f"check failed: {type(exc).__name__}"
    return "ok"


class WriteHealth:
    """Can promoter store deliveries right now? For /readyz.

    Not-ready while a probe write into the state directory fails (a full or read-only disk:
    4 KiB written, fsynced and removed), and for ``WRITE_FAILURE_MEMORY_SECONDS`` after the
    queue failed to store a delivery, or the state database a GitLab or Argo CD hook's claim
    (hook_http), unless a later delivery was stored by the queue or recorded by a hook: either
    proves the state takes writes again. The memory is bounded so
    a pod taken out of service (and so receiving nothing) becomes ready again once the probe
    passes; a failing queue then marks it not-ready again on the next delivery.
    """

    def __init__(self, state_dir: Path, clock: Clock) -> None:
        self._state_dir = state_dir
        self._probe_path = state_dir / ".readyz-probe"
        self._clock = clock
        self._lock = threading.Lock()
        self._failure: tuple[float, str] | None = None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failure = (self._clock.now(), public_reason(exc))

    def succeeded(self) -> None:
        with self._lock:
            self._failure = None

    def check(self) -> None:
        with self._lock:
            failure = self._failure
        if failure and self._clock.now() - failure[0] < WRITE_FAILURE_MEMORY_SECONDS:
            raise TransientError(f"the last delivery could not be stored: {failure[1]}")
        # With the PostgreSQL backend nothing else may have made the state directory yet (the
        # SQLite queue would have): made here, owner-only, or /readyz would never be ready.
        ensure_state_dir(self._state_dir)
        descriptor = os.open(self._probe_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(_PROBE_BYTES)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                os.unlink(self._probe_path)
