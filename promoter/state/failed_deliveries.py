"""GitLab hook deliveries that failed while promoter acted on them, kept to be handled again.

GitLab does not retry a delivery answered 5xx (nor one it could not send): it logs it under
the hook's *Recent events*, where someone may resend it by hand. The MR sweep records a merge or
close whose every delivery failed, but an approval, a reopen or a pipeline's status has no
such second path. So a delivery that fails while promoter acts on it (MLflow down, another
handler recording the same MR) is kept here with its event header, its body and its
``Idempotency-Key`` (one ``state_meta`` key each; never the token, which is only checked), and
the reconcile loop's leader handles it again when due (``due``), backing off, until it is
answered (``forget``) or has failed ``MAX_ATTEMPTS`` times: then it is parked, with its last
error, for an operator (logged; a resend from GitLab still acts, under the same key).

Only deliveries with an ``Idempotency-Key`` (GitLab 17.4+) are kept: handled again under it,
a resend from GitLab meanwhile is recognised as the same delivery, never acted on twice. At
most ``MAX_KEPT`` are kept; beyond that (an outage longer than any backoff) the delivery is
left to GitLab's *Recent events* and its loss is logged as an error, never silent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from promoter.state.db import Connection, StateDB

PREFIX = "hook.failed.gitlab."
MAX_KEPT = 200
MAX_ATTEMPTS = 12            # the first failure included; ~34 hours of backing off
FIRST_DELAY_SECONDS = 30.0
MAX_DELAY_SECONDS = 4 * 3600.0


@dataclass(frozen=True)
class FailedDelivery:
    key: str               # the delivery's Idempotency-Key
    event: str             # its X-Gitlab-Event header
    body: bytes
    attempts: int          # how often acting on it failed
    due: float             # when it is handled again (seconds since the epoch)
    error: str             # why it failed last (public: no secret, see public_errors)
    parked: bool = False   # failed MAX_ATTEMPTS times: handled again only if resent


def delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: doubling from 30 s, at most
    4 hours."""
    return min(FIRST_DELAY_SECONDS * 2.0 ** max(attempts - 1, 0), MAX_DELAY_SECONDS)


class FailedDeliveries:
    def __init__(self, db: StateDB, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    def keep(self, key: str, event: str, body: bytes, error: str) -> bool:
        """Keep a delivery that just failed (first failure: due after ``delay(1)``). A key kept
        already is left as it is (its own retry counts its failures). False when
        ``MAX_KEPT`` are kept: nothing is written."""
        def insert(conn: Connection) -> bool:
            if _row(conn, key) is not None:
                return True
            (kept,) = conn.execute("SELECT COUNT(*) FROM state_meta WHERE key LIKE ?",
                                   (f"{PREFIX}%",)).fetchone()
            if int(kept) >= MAX_KEPT:
                return False
            _put(conn, FailedDelivery(key, event, body, 1, self.clock() + delay(1), error))
            return True

        return self.db.write(insert)

    def due(self, limit: int = 20) -> list[FailedDelivery]:
        """The kept deliveries due now (not parked), the earliest first, at most ``limit``."""
        now = self.clock()
        kept = [delivery for delivery in self.all() if not delivery.parked and delivery.due <= now]
        return sorted(kept, key=lambda delivery: delivery.due)[:limit]

    def all(self) -> list[FailedDelivery]:
        rows = self.db.read(lambda conn: conn.execute(
            "SELECT key, value FROM state_meta WHERE key LIKE ?", (f"{PREFIX}%",)).fetchall())
        return [delivery for key, value in rows
                if (delivery := _parse(str(key)[len(PREFIX):], str(value))) is not None]

    def failed_again(self, delivery: FailedDelivery, error: str) -> FailedDelivery:
        """Acting on it failed once more: due again after the next delay, or parked."""
        attempts = delivery.attempts + 1
        again = FailedDelivery(delivery.key, delivery.event, delivery.body, attempts,
                               self.clock() + delay(attempts), error,
                               parked=attempts >= MAX_ATTEMPTS)
        self.db.write(lambda conn: _put(conn, again))
        return again

    def forget(self, key: str) -> None:
        """Answered (acted on, a duplicate, or nothing to do): no longer kept."""
        self.db.write(lambda conn: conn.execute("DELETE FROM state_meta WHERE key = ?",
                                                (PREFIX + key,)))


def _row(conn: Connection, key: str) -> object:
    return conn.execute("SELECT value FROM state_meta WHERE key = ?", (PREFIX + key,)).fetchone()


def _put(conn: Connection, delivery: FailedDelivery) -> None:
    value = json.dumps({"event": delivery.event,
                        "body": base64.b64encode(delivery.body).decode("ascii"),
                        "attempts": delivery.attempts, "due": delivery.due,
                        "error": delivery.error, "parked": delivery.parked})
    conn.execute("INSERT INTO state_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                 "SET value = excluded.value", (PREFIX + delivery.key, value))


def _parse(key: str, value: str) -> FailedDelivery | None:
    """A kept delivery, or None for a value no promoter wrote (left alone, never acted on)."""
    try:
        fields = json.loads(value)
        return FailedDelivery(key, str(fields["event"]), base64.b64decode(fields["body"],
                                                                          validate=True),
                              int(fields["attempts"]), float(fields["due"]),
                              str(fields["error"]), bool(fields["parked"]))
    except (ValueError, KeyError, TypeError):
        return None
