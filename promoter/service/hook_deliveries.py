"""Hook deliveries handled at most once, and never lost: shared by the GitLab and Argo CD hooks.

A delivery is claimed (``processing``, committed) before it is acted on, finished with its
answer, and released when acting fails so its next handling acts (GitLab's: kept by
promoter and handled again, state.failed_deliveries, or resent by hand). A re-delivery of one
already answered is a duplicate; a re-delivery of one still ``processing`` is answered 503,
because its first handler may be slow or may have died between
claim and answer (SIGKILL, OOM), and calling it a duplicate would lose the event for good. A
claim older than ``deliveries.PROCESSING_TAKEOVER_SECONDS`` is taken over by the re-delivery.
Replicas measure claims on PostgreSQL's clock (queue_ops.shared_now), as the job queue its leases.
A handler that outlives the takeover age finds its claim taken: its answer and its release then
touch nothing (deliveries.Claim), so it can neither overwrite its successor's answer nor free the
successor's claim for a third handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from promoter.errors import PromoterError
from promoter.service.public_errors import public_reason
from promoter.service.queue_ops import shared_now
from promoter.state import deliveries
from promoter.state.db import StateDB
from promoter.state.deliveries import Claim, HookClaim

__all__ = ["Claim", "HookClaim", "HookDeliveries", "failed_while_acting", "in_progress_answer"]

_log = logging.getLogger("promoter.hook_deliveries")


class HookDeliveries:
    """One sender's delivery ids in the state database's one dedupe table."""

    def __init__(self, db: StateDB, source: str, *,
                 clock: Callable[[], float] | None = None,
                 takeover_after: float = deliveries.PROCESSING_TAKEOVER_SECONDS) -> None:
        self.db = db
        self.source = source
        self.clock = clock or time.time
        self._on_database_clock = clock is None  # see queue_ops.shared_now
        self._takeover_after = takeover_after

    def claim(self, delivery_id: str) -> Claim:
        return self.db.write(lambda conn: deliveries.claim_processing(
            conn, self.source, delivery_id, shared_now(conn, self.clock(), self._on_database_clock),
            self._takeover_after))

    def claim_again(self, delivery_id: str) -> Claim:
        """Claim a delivery answered before for handling again (``deliveries.claim_again``):
        the caller found that this time it means something new."""
        return self.db.write(lambda conn: deliveries.claim_again(
            conn, self.source, delivery_id,
            shared_now(conn, self.clock(), self._on_database_clock), self._takeover_after))

    def finish(self, held: Claim, status: str) -> None:
        """Record the answer: re-deliveries from now on are duplicates."""
        if not self.db.write(lambda conn: deliveries.answer(conn, held, status)):
            self._taken_over(held, "its answer was not recorded")

    def release(self, held: Claim) -> None:
        """Forget a delivery that failed, so the sender's retry is processed."""
        if not self.db.write(lambda conn: deliveries.release(conn, held)):
            self._taken_over(held, "it was left to the handler that took it over")

    def _taken_over(self, held: Claim, consequence: str) -> None:
        _log.warning("the %s delivery %r outlived its claim (taken over after %.0f s): %s",
                     held.source, held.delivery_id[:200], self._takeover_after, consequence)


def in_progress_answer(**described: Any) -> tuple[int, dict[str, Any]]:
    """503 for a re-delivery whose first delivery is still being handled: retry later."""
    return 503, {"error": "in_progress",
                 "detail": "an earlier delivery of this event is still being handled; retry "
                           "later (a handler that stopped gives its claim up after "
                           f"{deliveries.PROCESSING_TAKEOVER_SECONDS:.0f} s)", **described}


def failed_while_acting(exc: PromoterError) -> tuple[int, dict[str, Any]]:
    """The answer when a valid delivery could not be acted on: a 5xx (503 unless the error is
    a 5xx of its own), never the error's 4xx. The request was fine; a 4xx would say otherwise
    (an MLflow AuthError is not a bad hook token), stop a sender's retries for good, and count
    towards GitLab disabling the hook. The caller has released the delivery for the retry."""
    status = exc.http_status if exc.http_status >= 500 else 503
    return status, {"error": exc.kind, "detail": public_reason(exc)}
