"""`jobs retry` of an older job while a newer job of the same deployment is running."""

from __future__ import annotations

import pytest

from promoter.core.jobs import JobKey
from promoter.errors import PermanentError
from promoter.service.worker import Worker
from tests.conftest import cli_runner
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import ManualClock

V7 = JobKey("fraud-detector", "7", "production", "promote")
V8 = JobKey("fraud-detector", "8", "production", "promote")


def test_a_retried_older_job_waits_while_a_newer_one_runs_even_past_its_lease(
        state_backend: StateBackend, clock: ManualClock) -> None:
    """Worker b froze past v8's lease: v7, retried meanwhile, must not run beside it. v8 is
    taken over instead, which cuts b off (its next heartbeat or step is refused)."""
    queue = state_backend.queue(clock)
    v7 = queue.enqueue(V7).job
    assert queue.claim("a", 60).id == v7.id  # type: ignore[union-attr]
    queue.park(v7.id, "a", "PermanentError: broken intent")
    v8 = queue.enqueue(V8).job
    assert queue.claim("b", 60).id == v8.id  # type: ignore[union-attr]
    clock.advance(61)
    queue.retry(v7.id)
    taken = queue.claim("c", 60)
    assert taken is not None and taken.id == v8.id
    assert not queue.extend_lease(v8.id, "b", 60)
    assert queue.claim("d", 60) is None               # v7 waits for v8 to finish
    assert [job.id for job in queue.list("running")] == [v8.id]
    queue.complete(v8.id, "c", {"outcome": "proposed"})
    again = queue.claim("d", 60)
    assert again is not None and again.id == v7.id


def test_a_retried_denial_is_no_longer_shown_as_one(
        state_backend: StateBackend, clock: ManualClock, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    queue = state_backend.queue(clock)
    job = queue.enqueue(V7).job
    queue.claim("w")
    queue.complete(job.id, "w", {"outcome": "denied", "reasons": ["tag missing"]})
    queue.retry(job.id)
    assert queue.get(job.id).result == {}  # type: ignore[union-attr]

    def broken(_job: object, _ctx: object) -> dict[str, object]:
        raise PermanentError("bad intent: manifests invalid")

    Worker(queue, broken, heartbeat=False).run_once()  # type: ignore[arg-type]
    for name, value in state_backend.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PROMOTER_CONFIG", raising=False)
    code, out, _ = cli_runner(capsys)("jobs", "show", str(job.id))
    assert code == 0 and "state:       dead" in out and "denied" not in out


def test_an_interrupted_handler_lets_its_job_go_at_once(
        state_backend: StateBackend, clock: ManualClock) -> None:
    """Ctrl-C in `promoter promote` (or a shutdown) stops the handler: the job is taken over
    now, not after its lease."""
    queue = state_backend.queue(clock)
    job = queue.enqueue(V7).job

    def interrupted(_job: object, _ctx: object) -> dict[str, object]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Worker(queue, interrupted, worker_id="cli", heartbeat=False).run_once()  # type: ignore[arg-type]
    taken = queue.claim("serve", 60)
    assert taken is not None and taken.id == job.id
