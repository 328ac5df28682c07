"""Jobs as data, and the pure decisions about them.

A job is one promotion or decommission, identified by its idempotency key
(model, version, env, action). This module decides — without touching a clock, a database or
a random generator of its own — which state changes are legal, whether an incoming event
needs a new job or is already covered by one, what a handler failure means for the job, and
how long to wait before the next attempt. promoter.service.queue stores the results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from promoter.core.masking import without_credentials
from promoter.errors import Disposition, PolicyDenied, TransientError, UserError, disposition_of

# The step a promotion records just before it may push a branch or open an MR: a job that
# fails after it may have left one (`promoter rollback` reads it).
PROPOSAL_STARTED = "proposal-started"
# The payload reason of `promoter rollback`'s job: a person asked for that version now, so it
# is proposed even where a reviewer closed an earlier MR of it (core.pipeline) — that version
# only, named under ROLLBACK_TO: the job deploys what the alias names when it runs, and a
# later alias move folded into it (queue_ops) or a retry after one may resolve another.
ROLLBACK_REASON = "rollback"
ROLLBACK_TO = "rollback_to"


class JobState(StrEnum):
    """A job's state. StrEnum: the stored text and JSON output are the plain values."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"
    DEAD = "dead"


class JobAction(StrEnum):
    PROMOTE = "promote"
    DECOMMISSION = "decommission"


QUEUED: Final = JobState.QUEUED
RUNNING: Final = JobState.RUNNING
RETRYING: Final = JobState.RETRYING
DONE: Final = JobState.DONE
DEAD: Final = JobState.DEAD
MAX_ATTEMPTS = 8  # a job's attempts before a retried failure parks it
# An attempt running longer is given up (server.job_timeout_seconds): a handler hung in a call
# without a timeout must not hold its job, and every newer job of its deployment, forever.
# Long enough for an image build of a large model.
JOB_TIMEOUT_SECONDS = 3600.0
STATES: Final = tuple(JobState)
TERMINAL_STATES: Final = frozenset({DONE, DEAD})
ACTIONS: Final = tuple(JobAction)

# Every legal move. running → running is a re-claim after the holder's lease expired;
# done → queued is `jobs retry` of a policy denial (the policy or the tags may have changed).
TRANSITIONS: Final[dict[JobState, frozenset[JobState]]] = {
    QUEUED: frozenset({RUNNING}),
    RUNNING: frozenset({RUNNING, DONE, RETRYING, DEAD}),
    RETRYING: frozenset({RUNNING, QUEUED}),
    DONE: frozenset({QUEUED}),
    DEAD: frozenset({QUEUED}),
}


class IllegalTransition(RuntimeError):
    """The queue tried a state change TRANSITIONS does not allow: a bug in promoter, never a
    user's mistake, so it is not a PromoterError (the worker's unexpected-error path reports
    it with a traceback)."""


@dataclass(frozen=True)
class JobKey:
    """The idempotency key: one job per (model, version, env, action) at a time."""

    model: str  # MLflow registered model name, free-form
    version: str
    env: str
    # Given as plain text by callers; always a JobAction (a str) once constructed.
    action: str

    def __post_init__(self) -> None:
        for name in ("model", "version", "env"):
            if not getattr(self, name):
                raise UserError(f"a job key needs a non-empty {name}")
        if self.action not in ACTIONS:
            raise UserError(f"unknown job action {self.action!r}",
                            hint="use one of: " + ", ".join(ACTIONS))
        object.__setattr__(self, "action", JobAction(self.action))

    def describe(self) -> str:
        return f"{self.action} {self.model} v{self.version} → {self.env}"


@dataclass(frozen=True)
class Job:
    id: int
    key: JobKey
    state: JobState
    attempts: int
    payload: dict[str, Any]
    result: dict[str, Any]
    reason: str | None
    created_at: float
    updated_at: float
    next_run_at: float
    lease_owner: str | None
    lease_expires_at: float | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (CLI --output json, logs)."""
        return {
            "id": self.id, "model": self.key.model, "version": self.key.version,
            "env": self.key.env, "action": str(self.key.action), "state": str(self.state),
            "attempts": self.attempts, "payload": self.payload, "result": self.result,
            "reason": self.reason, "created_at": self.created_at, "updated_at": self.updated_at,
            "next_run_at": self.next_run_at, "lease_owner": self.lease_owner,
            "lease_expires_at": self.lease_expires_at,
        }


def can_transition(current: str, new: str) -> bool:
    return current in TRANSITIONS and new in TRANSITIONS[JobState(current)]


def check_transition(job_id: int, current: str, new: str) -> JobState:
    """``new`` as a JobState if ``current → new`` is legal; IllegalTransition otherwise."""
    if not can_transition(current, new):
        raise IllegalTransition(f"job {job_id}: {current} → {new} is not a legal state change")
    return JobState(new)


def settled_key(key: JobKey, state: str, result: Mapping[str, Any] | None) -> JobKey:
    """The key a job stands for when asking whether it covers a later event or a target the
    reconcile pass sees: its ``key`` names the version its events asked for, but a promotion
    deploys what the alias (or stage) points at when it runs. So a done promotion whose
    result names the version it resolved (deployed, or was denied) stands for that version:
    asked for 5 with the alias moved on to 6 before it ran, it deployed 6, and an alias moved
    back to 5 is not covered by it. Any other job stands for its key: one not done has not
    resolved anything yet (or will again); a done one whose result names no version (a
    result from before results named it, or a run that found nothing to deploy) says nothing
    better."""
    if state != DONE or key.action != JobAction.PROMOTE or not result:
        return key
    resolved = result.get("version")
    if not isinstance(resolved, str) or not resolved or resolved == key.version:
        return key
    return JobKey(key.model, resolved, key.env, key.action)


def needs_new_job(key: JobKey, latest_key: JobKey | None, latest_state: str | None, *,
                  fresh: bool = False) -> bool:
    """Should an event for ``key`` create a job, given the newest job for its (model, env)
    (``latest_key``: the key it stands for, see settled_key)?

    No when that newest job has not started yet and does the same action: it resolves the
    alias (or stage) when it runs, so it covers every later event, whatever version they name
    (fifty alias moves in a burst are one job, not fifty). No either when the newest job stands
    for the same key and is not dead: a re-set alias or a re-delivered event is covered by it.
    Yes otherwise — so a running job gets exactly one successor, and moving an alias away and
    back after a job finished (a rollback), or to a version other than the one a finished job
    deployed, is a new job.

    ``fresh``: a person asks for this deployment now (`promoter rollback`, also re-run after
    the rollback's MR was closed unmerged): a job that already ran, or is running, covers
    nothing then, or the request would be answered with that job's old result and nothing
    proposed. A queued job still covers it, as above (it resolves the alias when it runs, and
    takes on the request: queue_ops), and so does one waiting to run again (retrying).
    """
    if latest_key is None or latest_state is None:
        return True
    if fresh and latest_state in (RUNNING, DONE, DEAD):
        return True
    if latest_state == QUEUED and latest_key.action == key.action:
        return False
    return latest_key != key or latest_state == DEAD


def retryable_again(claim_count: int, max_attempts: int) -> bool:
    """A job whose claim made it attempt number ``claim_count`` may still run."""
    return claim_count <= max_attempts


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: wait uniform(0, min(cap, base · 2^(n-1)))."""

    base_seconds: float = 2.0
    cap_seconds: float = 300.0

    def delay(self, attempt: int, random: Callable[[], float],
              retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``random`` returns a float in [0, 1) and is injected so tests are deterministic.
        A dependency's own ``retry_after`` is a floor (it knows better than our guess), and
        the cap bounds both, so a hostile or broken Retry-After cannot park a job for days.
        """
        exponent = min(max(attempt, 1) - 1, 60)  # 2**60 · base is already far beyond any cap
        ceiling = min(self.cap_seconds, self.base_seconds * (2.0 ** exponent))
        jittered = ceiling * min(max(random(), 0.0), 1.0)
        if retry_after is not None and retry_after > jittered:
            jittered = retry_after
        return max(0.0, min(self.cap_seconds, jittered))


@dataclass(frozen=True)
class Outcome:
    """What to do with a job after its handler finished or failed."""

    state: JobState  # DONE, RETRYING or DEAD
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None


def outcome_for_error(error: BaseException, attempt: int, max_attempts: int) -> Outcome:
    """A handler failure's next state, from the error's own disposition (errors.py)."""
    disposition = disposition_of(error)
    # A reason is stored and shown (`promoter jobs`, the audit trail): an error quoting what a
    # server sent may hold a token no configured value names, so its shape is masked here.
    said = without_credentials(str(error))
    if disposition is Disposition.DENY:
        reasons = [without_credentials(reason) for reason in error.reasons] \
            if isinstance(error, PolicyDenied) else [said]
        result: dict[str, Any] = {"outcome": "denied", "reasons": reasons}
        if isinstance(error, PolicyDenied) and error.version:
            result["version"] = error.version  # the version it resolved (see settled_key)
        return Outcome(DONE, reason=said, result=result)
    if disposition is Disposition.PARK:
        return Outcome(DEAD, reason=f"{type(error).__name__}: {said}")
    # Retried: TransientError, and anything unexpected (a bug, an untranslated library error);
    # the attempt limit still parks it with its reason in the end.
    label = "" if isinstance(error, TransientError) else "unexpected "
    reason = f"{label}{type(error).__name__}: {said}"
    if attempt >= max_attempts:
        return Outcome(DEAD, reason=f"gave up after {attempt} attempts; last error: {reason}")
    retry_after = error.retry_after if isinstance(error, TransientError) else None
    return Outcome(RETRYING, reason=reason, retry_after=retry_after)
