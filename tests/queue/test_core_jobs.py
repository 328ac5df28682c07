"""The pure decisions: legal moves, coalescing, backoff, and what a failure means."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promoter.core.jobs import (
    DEAD,
    DONE,
    QUEUED,
    RETRYING,
    RUNNING,
    STATES,
    Backoff,
    IllegalTransition,
    JobAction,
    JobKey,
    JobState,
    can_transition,
    check_transition,
    needs_new_job,
    outcome_for_error,
    settled_key,
)
from promoter.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    PolicyDenied,
    TransientError,
    UserError,
)

V7 = JobKey("fraud-detector", "7", "production", "promote")
V8 = JobKey("fraud-detector", "8", "production", "promote")


def test_states_and_actions_are_enums_whose_text_is_what_is_stored() -> None:
    assert [str(state) for state in STATES] == ["queued", "running", "retrying", "done", "dead"]
    assert V7.action is JobAction.PROMOTE and JobKey("fraud-detector", "7", "production",
                                                           JobAction.PROMOTE) == V7
    assert JobState("dead") is DEAD


@given(st.sampled_from(STATES), st.sampled_from(STATES))
def test_check_transition_allows_exactly_the_legal_moves(current: JobState,
                                                         new: JobState) -> None:
    if can_transition(current, new):
        assert check_transition(1, current, new) is new
    else:
        with pytest.raises(IllegalTransition, match=f"job 1: {current} → {new}"):
            check_transition(1, current, new)


def test_only_the_documented_moves_are_legal() -> None:
    assert can_transition(QUEUED, RUNNING)
    assert can_transition(RUNNING, DONE) and can_transition(RUNNING, DEAD)
    assert can_transition(RUNNING, RETRYING) and can_transition(RETRYING, RUNNING)
    assert can_transition(DEAD, QUEUED)
    assert not can_transition(QUEUED, DONE)
    assert not can_transition(DONE, RUNNING)
    assert not can_transition(DEAD, RUNNING)
    assert not can_transition("bogus", QUEUED)


def test_a_key_needs_every_part_and_a_known_action() -> None:
    with pytest.raises(UserError, match="version"):
        JobKey("m", "", "production", "promote")
    with pytest.raises(UserError, match="deploy"):
        JobKey("m", "1", "production", "deploy")


@pytest.mark.parametrize("state", [QUEUED, RUNNING, RETRYING, DONE])
def test_the_same_key_is_covered_by_the_newest_job_unless_it_is_dead(state: str) -> None:
    assert not needs_new_job(V7, V7, state)
    assert needs_new_job(V7, V7, DEAD)


def test_a_queued_job_covers_later_versions_of_its_action() -> None:
    assert not needs_new_job(V8, V7, QUEUED)          # it resolves the alias when it runs
    assert needs_new_job(V8, V7, RUNNING)             # a running job gets one successor
    assert needs_new_job(V8, V7, RETRYING)            # it started already
    decommission = JobKey("fraud-detector", "*", "production", "decommission")
    assert needs_new_job(decommission, V7, QUEUED)    # another action is its own job


def test_a_fresh_request_is_answered_by_no_job_that_ran() -> None:
    """`promoter rollback` asked again after its MR was closed unmerged: the finished job of
    the same version must not answer it with its old MR."""
    for state in (RUNNING, DONE, DEAD):
        assert needs_new_job(V7, V7, state, fresh=True)
    assert not needs_new_job(V7, V7, QUEUED, fresh=True)    # not run yet: it takes it on
    assert not needs_new_job(V7, V8, QUEUED, fresh=True)
    assert not needs_new_job(V7, V7, RETRYING, fresh=True)  # runs again, resolving the alias


def test_another_version_or_action_or_no_job_needs_a_new_job() -> None:
    assert needs_new_job(V7, None, None)
    assert needs_new_job(V7, V8, DONE)  # the rollback case: v8 was last, v7 again
    assert needs_new_job(JobKey("fraud-detector", "7", "production", "decommission"), V7, DONE)


def test_a_done_promotion_stands_for_the_version_it_resolved() -> None:
    deployed_8 = {"outcome": "created", "version": "8", "requested_version": "7"}
    assert settled_key(V7, DONE, deployed_8) == V8
    assert needs_new_job(V7, settled_key(V7, DONE, deployed_8), DONE)  # the alias back at 7
    assert not needs_new_job(V8, settled_key(V7, DONE, deployed_8), DONE)
    assert settled_key(V7, DONE, {"outcome": "denied", "reasons": [], "version": "8"}) == V8


@pytest.mark.parametrize("state", [QUEUED, RUNNING, RETRYING, DEAD])
def test_a_job_not_done_stands_for_its_key(state: str) -> None:
    assert settled_key(V7, state, {"version": "8"}) == V7


@pytest.mark.parametrize("result", [None, {}, {"outcome": "skipped", "version": None},
                                    {"outcome": "denied", "reasons": ["x"]}, {"version": 8}])
def test_a_done_job_whose_result_names_no_version_stands_for_its_key(result: object) -> None:
    assert settled_key(V7, DONE, result) == V7  # type: ignore[arg-type]


def test_a_decommission_stands_for_its_key() -> None:
    removal = JobKey("fraud-detector", "*", "production", "decommission")
    assert settled_key(removal, DONE, {"outcome": "created", "version": "7"}) == removal


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    backoff = Backoff(base_seconds=2, cap_seconds=60)
    top = lambda: 0.999999  # noqa: E731 - the largest value random() can return
    ceilings = [round(backoff.delay(n, top)) for n in range(1, 8)]
    assert ceilings == [2, 4, 8, 16, 32, 60, 60]
    assert backoff.delay(3, lambda: 0.0) == 0.0  # full jitter reaches down to zero
    assert backoff.delay(3, lambda: 0.5) == 4.0


def test_retry_after_is_a_floor_but_the_cap_still_holds() -> None:
    backoff = Backoff(base_seconds=1, cap_seconds=30)
    assert backoff.delay(1, lambda: 0.0, retry_after=12) == 12
    assert backoff.delay(1, lambda: 0.0, retry_after=86_400) == 30


@given(attempt=st.integers(min_value=-5, max_value=10_000),
       draw=st.floats(min_value=0, max_value=1, exclude_max=True),
       retry_after=st.none() | st.floats(min_value=0, max_value=1e9))
def test_every_delay_lies_between_zero_and_the_cap(attempt: int, draw: float,
                                                   retry_after: float | None) -> None:
    delay = Backoff(base_seconds=0.5, cap_seconds=120).delay(attempt, lambda: draw, retry_after)
    assert 0 <= delay <= 120


def test_policy_denial_finishes_the_job_as_denied_with_every_reason() -> None:
    outcome = outcome_for_error(PolicyDenied(["tag validation_status must be passed",
                                              "gpu type a100 not allowed"]), 1, 8)
    assert outcome.state == DONE
    assert outcome.result == {"outcome": "denied", "reasons": [
        "tag validation_status must be passed", "gpu type a100 not allowed"]}


def test_a_denial_names_the_version_it_denied() -> None:
    outcome = outcome_for_error(PolicyDenied(["gpu type a100 not allowed"], version="8"), 1, 8)
    assert outcome.result == {"outcome": "denied", "reasons": ["gpu type a100 not allowed"],
                              "version": "8"}


@pytest.mark.parametrize("error", [PermanentError("403 from GitLab"), UserError("bad name"),
                                   ConfigError("no env"), AuthError("token rejected")])
def test_errors_retrying_cannot_fix_are_dead_at_once(error: Exception) -> None:
    outcome = outcome_for_error(error, 1, 8)
    assert outcome.state == DEAD
    assert str(error) in (outcome.reason or "")


def test_transient_errors_retry_until_the_attempts_are_spent() -> None:
    error = TransientError("GitLab answered 503", retry_after=7)
    retry = outcome_for_error(error, 3, 4)
    assert (retry.state, retry.retry_after) == (RETRYING, 7)
    spent = outcome_for_error(error, 4, 4)
    assert spent.state == DEAD
    assert "gave up after 4 attempts" in (spent.reason or "")
    assert "GitLab answered 503" in (spent.reason or "")


def test_an_unexpected_exception_is_retried_and_labelled() -> None:
    outcome = outcome_for_error(KeyError("image"), 1, 3)
    assert outcome.state == RETRYING
    assert (outcome.reason or "").startswith("unexpected KeyError")


def test_states_are_the_documented_five() -> None:
    assert set(STATES) == {"queued", "running", "retrying", "done", "dead"}


@pytest.mark.parametrize("error", [PermanentError("registry said: Bearer CANARY-tok-123"),
                                   TransientError("proxy echoed Authorization: Basic dXNlcjpwdw=="),
                                   PolicyDenied(["config {'api_key': 'CANARY-key'} refused"])])
def test_a_stored_reason_holds_no_credential_an_error_quoted(error: Exception) -> None:
    """The reason is stored and shown (`promoter jobs`, the audit trail): a token a server
    issued for one request, quoted in its error body, is masked by its shape."""
    outcome = outcome_for_error(error, 8, 8)
    stored = f"{outcome.reason} {outcome.result}"
    assert "CANARY" not in stored and "dXNlcjpwdw" not in stored and "***" in stored
