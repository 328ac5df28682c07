"""The HTTP side of promoter's webhooks when coming back later can help.

Every sender retries a 5xx and none retries a 4xx, so a hook answers 5xx exactly when a retry
can succeed (promoter's dependency failed, an earlier delivery is still being handled), and
then says when with Retry-After. A state database or disk that fails while a delivery is
stored or recorded (the MLflow intake's queue, the GitLab and Argo CD hooks' claims) is an
outage, not a bug: every intake answers it the same way, 503 "unavailable" with the reason
without paths (public_errors), the whole story in the log, and /readyz not ready for a while
(app.WriteHealth), so the Service stops routing deliveries to a replica that cannot keep them,
until a delivery stored or recorded again shows that the state takes writes.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

from promoter.errors import TransientError
from promoter.service.logs import OncePer, log
from promoter.service.public_errors import public_reason
from promoter.service.thread_lanes import Lane

_log = logging.getLogger("promoter.intake")
RETRY_AFTER_SECONDS = 5
# A source without its secret or token is this server's setup, not a failure: its 503
# not_configured is logged as a WARNING at most this often per source, since anyone can post
# to a public webhook URL and every post meets it.
NOT_CONFIGURED_WARNING_SECONDS = 600.0
# What a failing state database or disk raises: the backends' TransientError, SQLite's own
# errors (the queue and the stores on a file), OSError (a full or read-only disk).
STATE_FAILURES = (TransientError, sqlite3.Error, OSError)
Answer = tuple[int, dict[str, Any]]


def state_unavailable(exc: BaseException, what: str) -> Answer:
    """The answer when promoter's state cannot store or record a delivery: ``what`` failed."""
    return 503, {"error": "unavailable",
                 "detail": f"{what} ({public_reason(exc)}); retry later"}


def respond(status: int, answer: dict[str, Any]) -> JSONResponse:
    """A hook's ``(status, json)`` answer; a 5xx carries Retry-After."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status >= 500 else None
    return JSONResponse(answer, status_code=status, headers=headers)


def recorded(status: int, answer: dict[str, Any]) -> bool:
    """Whether a claimed delivery's answer was recorded: every 2xx but those before the claim
    (``ignored``) or from it alone (``duplicate``) follows the claim's and the answer's writes."""
    return 200 <= status < 300 and answer.get("status") not in ("ignored", "duplicate")


async def handled(source: str, handle: Callable[[], Answer],
                  on_state_failure: Callable[[BaseException], None] | None,
                  on_recorded: Callable[[], None] | None = None, *,
                  lane: Lane, not_configured: OncePer | None = None) -> JSONResponse:
    """Run a framework-agnostic hook handler on ``lane``'s threads (thread_lanes: the hooks'
    own, never those /readyz needs) and answer for it. With every thread of the lane busy, the
    delivery waits for one rather than being refused: its body has arrived, so it is handled
    even if the sender stops waiting (the sender's retry then finds it recorded, or in
    progress), while a 503 would leave it to retries Argo CD makes only a few times, seconds
    apart. The wait holds one open request, so ``server.max_connections`` bounds it. Its state
    writes (claim, finish, release) raise when the state fails: that becomes the 503 above,
    and ``on_state_failure`` (app.WriteHealth.failed) marks the replica not ready. Any other
    exception is a bug: 500, with Retry-After as every 5xx of a hook. ``on_recorded``
    (app.WriteHealth.succeeded), for a delivery the handler claims, is told when it was
    recorded: the state database stores again, so the replica need not wait to be ready.
    A 503 ``not_configured`` (no secret or token set) is warned about as the MLflow intake's,
    at most once a while per ``not_configured``, never as an error."""
    try:
        status, answer = await lane.run(handle)
        if on_recorded is not None and recorded(status, answer):
            on_recorded()
    except STATE_FAILURES as exc:
        log(_log, logging.ERROR, "the state database cannot record a delivery", source=source,
            error=str(exc))  # the full reason, paths included, goes to the log only
        if on_state_failure is not None:
            on_state_failure(exc)
        status, answer = state_unavailable(exc, "the state database cannot record the delivery")
    except Exception as exc:
        # A bug, answered here rather than by the app's handler for any route: the sender
        # retries this 5xx like the others, so it too says when.
        _log.error("unexpected error in the %s hook: %s", source, type(exc).__name__,
                   exc_info=exc)
        status, answer = 500, {"error": "internal", "detail": "unexpected error; see the logs"}
    if answer.get("error") == "not_configured" and \
            (not_configured is None or not_configured.due(source)):
        log(_log, logging.WARNING, "delivery rejected", source=source, status=status,
            error=answer["error"], detail=answer.get("detail"))
    return respond(status, answer)
