"""GitLab webhook intake: ``POST /webhooks/gitlab`` (Merge Request Hook, Pipeline Hook).

Checks, in order: the shared token (``X-Gitlab-Token``, compared in constant time with
``PROMOTER_GITLAB_WEBHOOK_TOKEN``), the event kind, the body, the ``Idempotency-Key`` (GitLab
sends the same key on every resend of one delivery; stored durably in the one dedupe table of
the state database, so a re-delivery after a restart is still recognised), and finally that
the MR head is the commit promoter pushed and the MR still targets the configured branch (an MR
retargeted elsewhere deploys nothing Argo CD syncs). An ``approved`` is acted on only with
every required approval in: GitLab CE/Free sends it on each approval, so there the MR's
approvals are read and compared with the count promoter stated (``counted_approvals``); short
of it, it is one approval of several, ignored as Premium's ``approval`` is. Only then is
``on_event`` called. A head
someone else pushed is answered ``human_commit`` and not acted on as promoter's: an approval
of it is ignored, but a merge or close of it on the target branch is passed on as a foreign
outcome (``pushed_sha`` set; service.outcomes records it as such, never as promoter's
deployment), so the audit trail shows what reached the branch. A failure while acting on a
valid delivery is promoter's, not GitLab's: answered 5xx (hook_deliveries.failed_while_acting)
with the delivery released. GitLab does not retry it by itself, so a delivery with an
``Idempotency-Key`` is kept (state.failed_deliveries) and handled again by the reconcile loop's
leader (``retry_failed``) until it is answered or parked; a resend from GitLab's *Recent
events* acts too, recognised by its key. Framework-agnostic:
``handle(headers, body) -> (status, json)``.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promoter.core.gitlab_payloads import parse
from promoter.core.mr_events import (
    ACTED_ON,
    HUMAN_COMMIT,
    PIPELINE_STATUSES,
    ForgeEvent,
    MergeRequestEvent,
    PipelineEvent,
    approvals_short,
    closed_by_promoter,
    foreign_settlement,
    refusal,
)
from promoter.errors import PromoterError, UserError
from promoter.service.hook_deliveries import (
    HookClaim,
    HookDeliveries,
    failed_while_acting,
    in_progress_answer,
)
from promoter.service.logs import OncePer, log
from promoter.service.thread_lanes import HOOK_THREADS, Lane
from promoter.state.db import StateDB, StateUnavailable, state_db
from promoter.state.failed_deliveries import FailedDeliveries

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from promoter.secret_settings import Secret
    from promoter.settings import Settings

_log = logging.getLogger("promoter.gitlab_hook")
TOKEN_VARIABLE = "PROMOTER_GITLAB_WEBHOOK_TOKEN"  # noqa: S105 - the variable's name
# (project id, MR iid) -> (branch, sha) promoter pushed for that MR, or None
PushedHead = Callable[[int, int], tuple[str, str] | None]
# MR iid -> (approvals given, approvals required) where only promoter counts them (GitLab
# CE/Free), None where GitLab's "approved" already means all are in (GitLabForge.counted_approvals)
CountedApprovals = Callable[[int], tuple[int, int] | None]
Answer = tuple[int, dict[str, Any]]


class DeliveryLog(HookDeliveries):
    """Idempotency keys claimed or handled: rows of the one dedupe table, source ``gitlab``."""

    SOURCE = "gitlab"

    def __init__(self, state: Path | StateDB, **options: Any) -> None:
        super().__init__(state_db(state), self.SOURCE, **options)


class GitLabHookHandler:
    def __init__(self, token: Secret | None, deliveries: DeliveryLog, pushed_head: PushedHead,
                 on_event: Callable[[ForgeEvent], None], *, target_branch: str = "main",
                 max_body_bytes: int = 1024 * 1024,
                 own_username: Callable[[], str | None] | None = None,
                 counted_approvals: CountedApprovals | None = None,
                 failed: FailedDeliveries | None = None) -> None:
        self._token = token
        # Deliveries that failed while acted on, handled again by ``retry_failed``: GitLab
        # does not retry them. None: none kept (a resend from GitLab is the only retry).
        self._failed = failed
        # Read for an "approved" of promoter's MR: on CE/Free it comes with every approval.
        # None: the forge's "approved" is taken as it is.
        self._counted_approvals = counted_approvals
        # The user promoter acts as on GitLab (read once, when a close titled as promoter's
        # arrives); None: such a title alone tells promoter's closes.
        self._own_username = own_username
        self._target_branch = target_branch
        self._deliveries = deliveries
        self._pushed_head = pushed_head
        self._on_event = on_event
        self.max_body_bytes = max_body_bytes

    @classmethod
    def from_settings(cls, settings: Settings, on_event: Callable[[ForgeEvent], None],
                      pushed_head: PushedHead, state: StateDB | None = None,
                      own_username: Callable[[], str | None] | None = None,
                      counted_approvals: CountedApprovals | None = None
                      ) -> GitLabHookHandler:
        """``pushed_head`` reads promoter's record of pushed heads, ``own_username`` the user
        promoter acts as, ``counted_approvals`` an MR's approvals where only promoter counts
        them (``composition.gitlab_hook`` wires all three)."""
        state = state or StateDB.open(Path(settings.state_dir))
        return cls(settings.secret(TOKEN_VARIABLE), DeliveryLog(state), pushed_head, on_event,
                   target_branch=settings.git.target_branch,
                   max_body_bytes=settings.server.max_body_bytes, own_username=own_username,
                   counted_approvals=counted_approvals,
                   failed=FailedDeliveries(state, time.time))

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        lowered = {key.lower(): value for key, value in headers.items()}
        refused = self._check_token(lowered.get("x-gitlab-token"))
        if refused:
            return refused
        if len(body) > self.max_body_bytes:
            return _error(413, "too_large", f"body exceeds {self.max_body_bytes} bytes")
        event_header, key = lowered.get("x-gitlab-event", ""), lowered.get("idempotency-key")
        status, answer = self._handle_valid(event_header, key[:200] if key else None, body)
        # GitLab does not retry a 5xx: the delivery is kept, to be handled again
        # (state.failed_deliveries). One still being handled elsewhere is that handler's to
        # keep, should it fail.
        if status >= 500 and key and self._failed is not None and \
                answer.get("error") != "in_progress" and \
                not self._failed.keep(key[:200], event_header, body, str(answer.get("detail"))):
            log(_log, logging.ERROR, "a GitLab delivery failed and cannot be kept to be "
                "handled again (too many kept): resend it from the hook's Recent events",
                idempotency_key=key[:200], error=answer.get("detail"))
        return status, answer

    def retry_failed(self) -> int:
        """Handle again the failed deliveries that are due (state.failed_deliveries); the
        reconcile loop's leader calls it each pass. How many were answered."""
        if self._failed is None:
            return 0
        answered = 0
        for delivery in self._failed.due():
            try:
                status, answer = self._handle_valid(delivery.event, delivery.key, delivery.body)
            except StateUnavailable:
                raise   # nothing can be recorded now: the next pass tries again, uncounted
            except Exception as exc:  # a bug: counted, so it is parked rather than tried forever
                _log.exception("handling a failed GitLab delivery again crashed: %s",
                               type(exc).__name__)
                status, answer = 500, {"detail": f"internal error ({type(exc).__name__})"}
            if status < 500:
                self._failed.forget(delivery.key)
                answered += 1
                log(_log, logging.INFO, "a failed GitLab delivery was handled again",
                    idempotency_key=delivery.key, attempts=delivery.attempts,
                    answer=answer.get("status"))
                continue
            again = self._failed.failed_again(delivery, str(answer.get("detail")))
            if again.parked:
                log(_log, logging.ERROR, "a GitLab delivery failed every time it was handled; "
                    "parked: fix the cause, then resend it from the hook's Recent events",
                    idempotency_key=delivery.key, attempts=again.attempts, error=again.error)
        return answered

    def kept_deliveries(self) -> dict[str, int]:
        """How many failed deliveries are kept: {"waiting": n, "parked": n} (/metrics)."""
        kept = self._failed.all() if self._failed is not None else []
        parked = sum(1 for delivery in kept if delivery.parked)
        return {"waiting": len(kept) - parked, "parked": parked}

    def _handle_valid(self, event_header: str, key: str | None, body: bytes) -> Answer:
        """A delivery whose token and size were checked, from GitLab now or kept earlier."""
        try:
            event = parse(event_header, body)
        except UserError as exc:
            return _error(400, exc.kind, exc.message)
        if event is None:
            return 200, {"status": "ignored", "reason": f"event {event_header[:60]!r} not handled"}
        if isinstance(event, MergeRequestEvent) and event.action not in ACTED_ON:
            return 200, {"status": "ignored",
                         "reason": f"action {event.action[:40]!r} not acted on"}
        if isinstance(event, PipelineEvent) and event.status not in PIPELINE_STATUSES:
            return 200, {"status": "ignored",
                         "reason": f"pipeline status {event.status[:40]!r} not known"}
        if isinstance(event, MergeRequestEvent):
            try:
                ours = closed_by_promoter(event.action, event.title, event.source_branch,
                                          closer=event.user, own=self._own)
            except PromoterError as exc:   # kept, or resent: asked again then
                return failed_while_acting(exc)
            if ours:
                return 200, {"status": "ignored",
                             "reason": "promoter closed it (superseded or withdrawn)"}
        if event.name is None or event.iid is None:
            return 200, {"status": "ignored", "reason": "not a promoter merge request"}
        claimed = self._deliveries.claim(key) if key else None
        if claimed is not None and claimed.outcome is HookClaim.DONE:
            return 200, {"status": "duplicate", "idempotency_key": claimed.delivery_id}
        if claimed is not None and claimed.outcome is HookClaim.IN_PROGRESS:
            return in_progress_answer(idempotency_key=claimed.delivery_id)
        try:
            status, answer = self._act(event)
        except PromoterError as exc:
            if claimed is not None:
                self._deliveries.release(claimed)   # let the next handling of it act
            return failed_while_acting(exc)
        except Exception:
            if claimed is not None:
                self._deliveries.release(claimed)
            raise
        if claimed is not None:
            self._deliveries.finish(claimed, str(answer["status"]))
        return status, answer

    def _own(self) -> str | None:
        return self._own_username() if self._own_username is not None else None

    def _check_token(self, given: str | None) -> Answer | None:
        if self._token is None or not self._token.reveal():
            return _error(503, "not_configured",
                          f"the server has no {TOKEN_VARIABLE}; set it to the hook's secret token")
        if given is None:
            return _error(401, "unauthorized", "X-Gitlab-Token header is missing")
        if not hmac.compare_digest(given.encode("utf-8"), self._token.reveal().encode("utf-8")):
            return _error(401, "unauthorized", "X-Gitlab-Token does not match")
        return None

    def _act(self, event: ForgeEvent) -> Answer:
        assert event.iid is not None
        described = describe(event)
        pushed = self._pushed_head(event.project_id, event.iid)
        merge_request = event if isinstance(event, MergeRequestEvent) else None
        refused = refusal(event.iid, pushed=pushed,
                          source_branch=merge_request.source_branch if merge_request else None,
                          head_sha=event.head_sha,
                          target_branch=merge_request.target_branch if merge_request else None,
                          expected_target=self._target_branch)
        if refused is not None:
            status, reason = refused
            if status == HUMAN_COMMIT:
                assert pushed is not None
                answer = {"status": status, "pushed_sha": pushed[1], **described}
                if merge_request is not None and foreign_settlement(
                        merge_request.action, refused, target_branch=merge_request.target_branch,
                        expected_target=self._target_branch):
                    self._on_event(dataclasses.replace(merge_request, pushed_sha=pushed[1]))
                    answer["recorded"] = "foreign_head"
                return 200, answer
            if pushed is not None:  # promoter's MR, yet another branch: worth a warning
                log(_log, logging.WARNING, "GitLab event about promoter's MR not acted on",
                    iid=event.iid, project=event.project_id, reason=reason)
            return 200, {"status": status, "reason": reason, **described}
        if merge_request is not None and merge_request.action == "approved" and \
                self._counted_approvals is not None:
            # A forge read: a failure is raised like any failure while acting (5xx, the
            # delivery released and kept to be handled again), never taken as approved or
            # dropped.
            short = approvals_short("approved", self._counted_approvals(merge_request.iid))
            if short is not None:
                return 200, {"status": "ignored", "reason": short, **described}
        self._on_event(event)
        return 200, {"status": "accepted", **described}


def describe(event: ForgeEvent) -> dict[str, Any]:
    described: dict[str, Any] = {"event": event.kind, "iid": event.iid, "name": event.name,
                                 "env": event.env, "head_sha": event.head_sha}
    if isinstance(event, MergeRequestEvent):
        described["action"] = event.action
    else:
        described["pipeline_status"] = event.status
    return described


def _error(status: int, error: str, detail: str) -> Answer:
    return status, {"error": error, "detail": detail}


def starlette_endpoint(handler: GitLabHookHandler,
                       on_state_failure: Callable[[BaseException], None] | None = None,
                       on_recorded: Callable[[], None] | None = None, *,
                       lane: Lane | None = None,
                       ) -> Callable[[Request], Awaitable[Response]]:
    """``Route("/webhooks/gitlab", starlette_endpoint(handler), methods=["POST"])``; a state
    database that fails is answered 503 and reported to ``on_state_failure``, a delivery
    recorded in it to ``on_recorded`` (hook_http). Handlers run on ``lane`` (the app's hook
    threads; by default a lane of this endpoint's own)."""
    from starlette.responses import JSONResponse

    from promoter.service.hook_http import NOT_CONFIGURED_WARNING_SECONDS, handled

    threads = lane or Lane("gitlab-hook", HOOK_THREADS)
    not_configured = OncePer(NOT_CONFIGURED_WARNING_SECONDS)

    async def endpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > handler.max_body_bytes:
                return JSONResponse({"error": "too_large", "detail": "body too large"}, 413)
        # Only a delivery with an Idempotency-Key is claimed, and so recorded, by the handler.
        claimed = bool(request.headers.get("idempotency-key"))
        return await handled(DeliveryLog.SOURCE,
                             lambda: handler.handle(dict(request.headers), bytes(body)),
                             on_state_failure, on_recorded if claimed else None,
                             lane=threads,
                             not_configured=not_configured)

    return endpoint
