"""Who records a merge request's outcome, and who moves a model's ``live_version``.

One merge can reach several handlers at once: GitLab's webhook and the reconcile sweep, two
replicas' sweeps while leadership changes hands, every SQLite ``serve`` process. Reading "not
recorded yet" and recording it later leaves room for all of them to act (two ``mr.merge``
entries, two write-backs, a doubled or lost ``version.superseded``). So an outcome is claimed
in the state database before anything is written, as a hook delivery is
(promoter.service.hook_deliveries, the same table and rules): one claimant acts, the others
are told it is in progress (TransientError: the webhook answers 503 and keeps the delivery to
handle again, state.failed_deliveries; the sweep retries next pass) or, once finished, that it
is already recorded.

A claimant killed part-way (SIGKILL, OOM, node loss) never finishes nor releases its claim; it
goes stale after ``PROCESSING_TAKEOVER_SECONDS`` and the next handler (the sweep's next pass,
GitLab's re-delivery) takes it over and records the outcome again from the start. Whatever the
killed one had written is then written again: MLflow tags with the same values, but the audit
trail gets its entries a second time. Nothing is lost.

``live_version`` is read and written back in MLflow (no transaction spans the two), so its
moves are serialised per (model, env) by a second claim, held while a merge is recorded and
given up at once when done: two different MRs of one deployment merged at the same moment
each see the version the other made live.

A reopen undoes a close: its recording holds the MR's close claim and then forgets it
(``reopening``), so the MR's next close is recorded rather than taken for the first. It holds
the MR's merge claim as well, so a merge of the reopened MR is recorded after it, never
undone by it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from promoter.core.mr_events import MergeRequestEvent
from promoter.errors import TransientError
from promoter.service.hook_deliveries import HookClaim, HookDeliveries
from promoter.state.db import StateDB
from promoter.state.deliveries import PROCESSING_TAKEOVER_SECONDS

OUTCOME_SOURCE = "mr_outcome"      # one claim per (project, MR, action[, head of a close])
LIVE_SOURCE = "mr_live_version"    # one claim per (model, env); removed when done
RECORDED = "recorded"


class RecordingElsewhere(TransientError):
    """Another handler holds the claim: nothing is wrong, the outcome is being recorded (or
    the deployment's live_version moved) there. The webhook still answers 503 and keeps the
    delivery to handle again; the sweep notes it and looks again next pass, without counting
    a failure."""


class OutcomeClaims:
    def __init__(self, db: StateDB, *, clock: Callable[[], float] | None = None,
                 takeover_after: float = PROCESSING_TAKEOVER_SECONDS) -> None:
        # No clock given: HookDeliveries' own, the one every hook-delivery claim is aged by.
        self._outcomes = HookDeliveries(db, OUTCOME_SOURCE, clock=clock,
                                        takeover_after=takeover_after)
        self._live = HookDeliveries(db, LIVE_SOURCE, clock=clock, takeover_after=takeover_after)

    @contextmanager
    def outcome(self, event: MergeRequestEvent) -> Iterator[bool]:
        """Yields True when the caller is to record ``event`` (it holds the claim), False when
        it is recorded already. The claim is finished when the body returns and released when
        it raises, so a failed recording is tried again by the next handler."""
        claimed = self._outcomes.claim(_outcome_key(event, event.action))
        if claimed.outcome is HookClaim.DONE:
            yield False
            return
        if claimed.outcome is HookClaim.IN_PROGRESS:
            raise RecordingElsewhere(
                f"the {event.action} of MR !{event.iid} is being recorded by another handler",
                hint="retry later; a handler that stopped gives its claim up after "
                     f"{PROCESSING_TAKEOVER_SECONDS:.0f} s")
        try:
            yield True
        except Exception:
            self._outcomes.release(claimed)
            raise
        self._outcomes.finish(claimed, RECORDED)

    @contextmanager
    def reopening(self, event: MergeRequestEvent) -> Iterator[None]:
        """Hold the close claim of the MR ``event`` reopens while its reopen is recorded, then
        forget it: the next close of the same head is a new outcome, and recorded (kept, it
        would be taken for the first close, already recorded). Held, a close of the MR being
        recorded elsewhere meanwhile waits for the reopen (RecordingElsewhere when the close
        is being recorded now: the reopen is retried once it is).

        The MR's merge claim is held too, unless its merge is recorded already, and given
        back (not finished) after: the reopened MR may be merged at once, and a merge recorded
        while the reopen writes its ``mr_opened`` back would be overwritten by it, on the tag
        or on the row, with nothing left to record the merge again. Held, that merge waits
        (its hook is answered 503, the sweep retries) and is recorded after the reopen."""
        close = self._outcomes.claim_again(_outcome_key(event, "close"))
        if close.outcome is not HookClaim.ACT:
            raise _busy(f"a close of MR !{event.iid}")
        try:
            merge = self._outcomes.claim(_outcome_key(event, "merge"))
            if merge.outcome is HookClaim.IN_PROGRESS:
                raise _busy(f"a merge of MR !{event.iid}")
            try:
                yield
            finally:
                if merge.outcome is HookClaim.ACT:
                    self._outcomes.release(merge)
        finally:
            self._outcomes.release(close)

    @contextmanager
    def live_version(self, model: str, env: str) -> Iterator[None]:
        """Hold (model, env)'s live_version for the body; TransientError when another handler
        holds it (the caller has written nothing yet, so its retry starts clean)."""
        key = json.dumps([model, env])  # model names may hold any character
        held = self._live.claim(key)
        if held.outcome is not HookClaim.ACT:
            raise RecordingElsewhere(
                f"another merge of {model} in {env} is being recorded",
                hint="retry later; a handler that stopped gives its claim up after "
                     f"{PROCESSING_TAKEOVER_SECONDS:.0f} s")
        try:
            yield
        finally:  # also on a shutdown's KeyboardInterrupt: never block the next merge 300 s
            self._live.release(held)


def _busy(what: str) -> RecordingElsewhere:
    return RecordingElsewhere(
        f"{what} is being recorded by another handler",
        hint="retry later; a handler that stopped gives its claim up after "
             f"{PROCESSING_TAKEOVER_SECONDS:.0f} s")


def _outcome_key(event: MergeRequestEvent, action: str) -> str:
    """The claim of ``action`` (merge, close) on ``event``'s MR. A merge happens once; a
    close is claimed per head: an MR closed, reopened, given a new head and closed again is a
    second close to record (its deployment's row moved on meanwhile). A close after a reopen
    with the same head is one too: the reopen forgets the close's claim (``reopening``)."""
    key = f"{event.project_id}/{event.iid}/{action}"
    return f"{key}/{event.head_sha}" if action == "close" and event.head_sha else key
