"""Workers killed with SIGKILL: the lease runs out, another worker finishes the job once, and a
crash after a recorded step resumes from that step instead of redoing it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from promoter.service.queue import JobKey
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import log_lines, start_worker_process

V7 = JobKey("fraud-detector", "7", "production", "promote")
SHORT_LEASE = "1"  # seconds; the restarted worker waits for it to expire


def wait_for_line(log: Path, first_word: str) -> list[str]:
    for _ in range(3000):  # bounded: 30 s
        for words in log_lines(log):
            if words[0] == first_word:
                return words
        threading.Event().wait(0.01)
    raise AssertionError(f"no {first_word!r} line in {log}")


@pytest.mark.e2e
def test_a_job_whose_worker_is_killed_is_finished_once_by_the_next(
        tmp_path: Path, state_backend: StateBackend) -> None:
    queue = state_backend.queue()
    job = queue.enqueue(V7).job
    log = tmp_path / "runs.log"

    victim = start_worker_process(state_backend, "block", log, "--lease", SHORT_LEASE)
    _, job_id, victim_pid = wait_for_line(log, "start")
    assert int(job_id) == job.id
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    orphan = queue.get(job.id)
    assert (orphan.state, orphan.lease_owner) == ("running", f"{victim_pid}-0")

    survivor = start_worker_process(state_backend, "count", log, "--lease", SHORT_LEASE)
    _, stderr = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, stderr

    done = queue.get(job.id)
    assert (done.state, done.attempts) == ("done", 2)
    assert done.result == {"pid": survivor.pid}
    events = [words[0] for words in log_lines(log)]
    assert events == ["start", "start", "end"]  # killed once, then finished exactly once
    queue.close()


@pytest.mark.e2e
def test_a_crash_after_a_recorded_step_resumes_from_that_step(
        tmp_path: Path, state_backend: StateBackend) -> None:
    queue = state_backend.queue()
    job = queue.enqueue(V7).job
    log = tmp_path / "runs.log"

    crasher = start_worker_process(state_backend, "crash-after-step", log, "--lease", SHORT_LEASE)
    crasher.communicate(timeout=30)
    assert crasher.returncode == -signal.SIGKILL
    assert queue.get(job.id).state == "running"  # complete() never happened
    assert queue.steps(job.id) == {"prepare": {"artifact": f"built-by-{crasher.pid}"}}

    resumer = start_worker_process(state_backend, "resume", log, "--lease", SHORT_LEASE)
    _, stderr = resumer.communicate(timeout=60)
    assert resumer.returncode == 0, stderr

    assert log_lines(log) == [
        ["prepare-ran", str(job.id)],
        ["prepare-skipped", str(job.id), f"built-by-{crasher.pid}"],
        ["finish", str(job.id)],
    ]
    done = queue.get(job.id)
    assert (done.state, done.result) == ("done", {"artifact": f"built-by-{crasher.pid}"})
    queue.close()


@pytest.mark.e2e
def test_every_acknowledged_delivery_survives_a_sigkill_of_the_intake(
        tmp_path: Path, state_backend: StateBackend) -> None:
    log = tmp_path / "acks.log"
    producer = start_worker_process(state_backend, "produce", log)
    for _ in range(3000):  # bounded: until a few batches have been acknowledged
        if len(log_lines(log)) >= 300:
            break
        threading.Event().wait(0.01)
    producer.send_signal(signal.SIGKILL)
    producer.communicate(timeout=30)
    acked = {words[1] for words in log_lines(log)}
    assert len(acked) >= 300

    db = state_backend.open()  # a fresh connection: what is committed, not what was cached
    stored = {row[0] for row in db.read(lambda conn: conn.execute(
        "SELECT delivery_id FROM deliveries").fetchall())}
    assert acked <= stored  # acknowledged ⇒ committed; nothing was acked ahead of its commit
