"""SQLite: a queue call that waits for the write lock (another process's transaction, up to the
30 s busy timeout) measures its lease and due times from when it got the lock, not from when
it was called, or it hands out a lease already shortened by the wait.

The wait is simulated: another connection holds the write lock while the call starts, the
test's clock moves on by LOCK_WAIT, and only then is the lock let go."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from promoter.service.queue import EnqueueResult, JobKey, JobQueue
from tests.queue.conftest import ManualClock

T = TypeVar("T")
V7 = JobKey("fraud-detector", "7", "production", "promote")
LOCK_WAIT = 25.0  # within SQLite's 30 s busy timeout
LEASE = 10.0  # shorter than the wait: a lease measured from the call is over when granted
# How long to give the call to read the clock before the lock is let go. A call reading it
# inside its transaction cannot read it before then: the test passes whatever this is.
CALL_START_SECONDS = 0.3


class WatchedClock(ManualClock):
    """A manual clock that says when it was first read."""

    def __init__(self) -> None:
        super().__init__()
        self.read = threading.Event()

    def now(self) -> float:
        self.read.set()
        return super().now()


@pytest.fixture
def clock() -> WatchedClock:
    return WatchedClock()


@pytest.fixture
def queue(tmp_path: Path, clock: WatchedClock) -> Iterator[JobQueue]:
    q = JobQueue.open(tmp_path / "state", clock)
    yield q
    q.close()


def after_waiting_for_the_write_lock(queue: JobQueue, clock: WatchedClock,
                                     call: Callable[[], T]) -> T:
    """``call()``, started while another connection holds the write lock, which it lets go
    LOCK_WAIT seconds later by ``clock``."""
    holder = sqlite3.connect(queue.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    clock.read.clear()
    outcome: list[T] = []
    caller = threading.Thread(target=lambda: outcome.append(call()))
    caller.start()
    clock.read.wait(CALL_START_SECONDS)  # a call reading the clock up front has read it now
    clock.advance(LOCK_WAIT)
    holder.execute("COMMIT")
    holder.close()
    caller.join(30)
    assert outcome, "the call did not finish"
    return outcome[0]


def test_a_claim_that_waited_for_the_write_lock_gets_a_full_lease(
        queue: JobQueue, clock: WatchedClock) -> None:
    job = queue.enqueue(V7).job
    held = after_waiting_for_the_write_lock(queue, clock, lambda: queue.claim("w1", LEASE))
    assert held is not None and held.id == job.id
    assert held.lease_expires_at == clock.now() + LEASE
    assert queue.claim("w2", LEASE) is None  # not handed out expired to a second worker


def test_a_lease_extended_after_a_lock_wait_is_a_full_lease(
        queue: JobQueue, clock: WatchedClock) -> None:
    """before_side_effect relies on this: a fresh full lease before a push."""
    job = queue.enqueue(V7).job
    assert queue.claim("w1", LEASE) is not None
    assert after_waiting_for_the_write_lock(
        queue, clock, lambda: queue.extend_lease(job.id, "w1", LEASE))
    assert queue.get(job.id).lease_expires_at == clock.now() + LEASE
    assert queue.claim("w2", LEASE) is None


def test_a_backoff_after_a_lock_wait_counts_from_when_it_was_written(
        queue: JobQueue, clock: WatchedClock) -> None:
    job = queue.enqueue(V7).job
    assert queue.claim("w1", LEASE) is not None
    after_waiting_for_the_write_lock(
        queue, clock, lambda: queue.retry_later(job.id, "w1", "GitLab 503", delay=LEASE))
    assert queue.get(job.id).next_run_at == clock.now() + LEASE
    assert queue.claim("w2", LEASE) is None  # it waits out its whole backoff


@pytest.mark.parametrize("path", ["enqueue", "group commit"])
def test_a_job_enqueued_after_a_lock_wait_is_stamped_when_it_was_written(
        queue: JobQueue, clock: WatchedClock, path: str) -> None:
    def enqueue() -> EnqueueResult:
        if path == "enqueue":
            return queue.enqueue(V7)
        return asyncio.run(queue.enqueue_async(V7))

    job = after_waiting_for_the_write_lock(queue, clock, enqueue).job
    stored = queue.get(job.id)
    assert stored.created_at == stored.next_run_at == clock.now()
