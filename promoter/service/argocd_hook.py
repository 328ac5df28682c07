"""Argo CD notifications intake: ``POST /webhooks/argocd``.

Argo CD's notifications controller posts the body of promoter's templates (rendered by
`promoter gitops init` into argocd-notifications-cm) with the shared secret in
``X-Promoter-Token`` (from argocd-notifications-secret). Checks, in order: the secret (compared
in constant time with ``PROMOTER_ARGOCD_WEBHOOK_SECRET``; 503 when the server has none, 401
when missing or wrong), the size (413), JSON and its fields (400), then de-duplication (Argo CD
retries a delivery on 5xx and network errors; an identical report is answered ``duplicate``
while the cluster's stored row is still the one it stored: once another report replaced that
row, an identical one is a change again, e.g. Healthy after Degraded, and is handled).
Only then is the cluster's row handed to ``ClusterFeedback``. Framework-agnostic:
``handle(headers, body) -> (status, json)``.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from promoter.core import events
from promoter.core.cluster_status import DELETED, from_notification
from promoter.core.gitops_scaffold import TOKEN_HEADER
from promoter.errors import PromoterError, UserError
from promoter.service.cluster_feedback import ClusterFeedback
from promoter.service.cluster_status_store import StatusStore
from promoter.service.hook_deliveries import HookClaim, failed_while_acting, in_progress_answer
from promoter.service.logs import OncePer
from promoter.service.thread_lanes import HOOK_THREADS, Lane

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from promoter.ports.registry import Registry
    from promoter.secret_settings import Secret
    from promoter.settings import Settings

SECRET_VARIABLE = "PROMOTER_ARGOCD_WEBHOOK_SECRET"  # noqa: S105 - the variable's name
Answer = tuple[int, dict[str, Any]]


class ArgoCDHookHandler:
    def __init__(self, secret: Secret | None, store: StatusStore, feedback: ClusterFeedback, *,
                 max_body_bytes: int = 1024 * 1024) -> None:
        self._secret = secret
        self._store = store
        self._feedback = feedback
        self.max_body_bytes = max_body_bytes

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        lowered = {key.lower(): value for key, value in headers.items()}
        refused = check_secret(self._secret, lowered.get(TOKEN_HEADER.lower()))
        if refused:
            return refused
        if len(body) > self.max_body_bytes:
            return _error(413, "too_large", f"body exceeds {self.max_body_bytes} bytes")
        try:
            # The strict reading every hook uses: no lone surrogates, bounded nesting.
            notification = from_notification(events.load_json(body))
        except UserError as exc:
            return _error(400, exc.kind, exc.message)
        row = notification.status
        described = {"event": notification.event, **row.describe()}
        key = notification.dedupe_key
        deleted = notification.event == DELETED
        claimed = self._store.claim(key)
        if claimed.outcome is HookClaim.DONE and self._store.moved_on(row, deleted=deleted):
            # Handled before, but the cluster's stored row changed since: not a re-delivery to
            # drop, or Healthy again after Degraded (one reconciledAt, no health time: the
            # first report's key) would be lost for good, as Argo CD notifies once per change.
            # Handled as any report: the upsert keeps an older one from replacing a newer row,
            # and nothing is told unless the environment's summary changes.
            claimed = self._store.claim_again(key)
        if claimed.outcome is HookClaim.DONE:
            return 200, {"status": "duplicate", **described}
        if claimed.outcome is HookClaim.IN_PROGRESS:
            return in_progress_answer(**described)
        try:
            # A deleted Application's cluster stops counting: its row is marked deleted, and the
            # environment is judged on the clusters left (which may make it deployed).
            summary = self._feedback.observe(row.name, row.env, [] if deleted else [row],
                                             complete=False, actor=f"argocd:{row.application}",
                                             deleted=[row] if deleted else [])
        except PromoterError as exc:
            self._store.release(claimed)   # Argo CD retries a 5xx: let the retry through
            return failed_while_acting(exc)
        except Exception:
            self._store.release(claimed)
            raise
        self._store.finish(claimed, "recorded")
        return 200, {"status": "recorded", **described, "deployed": summary.deployed,
                     "environment_sync": summary.sync, "environment_health": summary.health}


def check_secret(secret: Secret | None, given: str | None) -> Answer | None:
    """The refusal of a notification whose token is missing or wrong (or of every one, while
    the server has no secret); None when ``given`` is the secret."""
    if secret is None or not secret.reveal():
        return _error(503, "not_configured",
                      f"the server has no {SECRET_VARIABLE}; set it to the value of "
                      "promoter-webhook-token in argocd-notifications-secret")
    if given is None:
        return _error(401, "unauthorized", f"{TOKEN_HEADER} header is missing")
    if not hmac.compare_digest(given.encode("utf-8"), secret.reveal().encode("utf-8")):
        return _error(401, "unauthorized", f"{TOKEN_HEADER} does not match")
    return None


def _error(status: int, error: str, detail: str) -> Answer:
    return status, {"error": error, "detail": detail}


def _build(settings: Settings, registry: Registry | None) -> ArgoCDHookHandler:
    from promoter.service import composition

    feedback = composition.cluster_feedback(settings, registry)
    return ArgoCDHookHandler(settings.secret(SECRET_VARIABLE), feedback.store, feedback,
                             max_body_bytes=settings.server.max_body_bytes)


def endpoint(settings: Settings, registry: Registry | None,
             on_state_failure: Callable[[BaseException], None] | None = None,
             on_recorded: Callable[[], None] | None = None, *, lane: Lane | None = None,
             ) -> Callable[[Request], Awaitable[Response]]:
    """``Route("/webhooks/argocd", endpoint(settings, registry), methods=["POST"])``; the
    handler (state database, MR notes) is built on the first delivery. A state database that
    fails is answered 503 and reported to ``on_state_failure``, a notification recorded in it
    (every one is claimed) to ``on_recorded`` (hook_http). Handlers run on ``lane`` (the app's
    hook threads; by default a lane of this endpoint's own)."""
    from starlette.responses import JSONResponse

    from promoter.service.hook_http import NOT_CONFIGURED_WARNING_SECONDS, handled

    threads = lane or Lane("argocd-hook", HOOK_THREADS)
    not_configured = OncePer(NOT_CONFIGURED_WARNING_SECONDS)
    secret = settings.secret(SECRET_VARIABLE)

    built: list[ArgoCDHookHandler] = []
    # Deliveries run on the threadpool: without the lock, two first deliveries arriving together
    # would both build (two state database pools, two forge clients). Still built lazily:
    # building opens the state database and the forge's provider, which merely creating the app
    # should not need.
    building = threading.Lock()

    def handler() -> ArgoCDHookHandler:
        if not built:
            with building:
                if not built:  # checked again: another delivery may have built it meanwhile
                    built.append(_build(settings, registry))
        return built[0]

    def authorised(headers: dict[str, str], body: bytes) -> Answer:
        # The token before the handler is built: building reaches the forge and the state
        # database, and a failure there (no GitLab token, say) must not answer anyone without
        # the token 500, nor be retried on each of their requests.
        refused = check_secret(secret, headers.get(TOKEN_HEADER.lower()))
        return refused or handler().handle(headers, body)

    async def receive(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.server.max_body_bytes:
                return JSONResponse({"error": "too_large", "detail": "body too large"}, 413)
        return await handled("argocd", lambda: authorised(dict(request.headers), bytes(body)),
                             on_state_failure, on_recorded, lane=threads,
                             not_configured=not_configured)

    return receive
