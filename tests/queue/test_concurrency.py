"""Many workers at once — threads and separate processes — never run a job twice, and never
run two jobs of one (model, env) at the same time."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from promoter.service.queue import JobKey, JobQueue
from promoter.service.worker import Worker
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import log_lines, start_worker_process
from tests.queue.worker_process import make_handler


def fill(queue: JobQueue, models: int, versions: int) -> set[int]:
    """``versions`` successive jobs for each of ``models`` deployments, interleaved. The
    actions alternate: a queued job covers later events of its own action, so successive
    promotions alone would collapse into one job."""
    ids = set()
    for version in range(versions):
        for model in range(models):
            action = "promote" if version % 2 == 0 else "decommission"
            result = queue.enqueue(JobKey(f"model-{model}", str(version), "production",
                                          action))
            assert result.created
            ids.add(result.job.id)
    return ids


def assert_each_ran_once_and_serially(log: Path, ids: set[int]) -> None:
    lines = log_lines(log)
    starts = Counter(int(words[1]) for words in lines if words[0] == "start")
    assert set(starts) == ids
    assert [job for job, n in starts.items() if n > 1] == []  # nobody ran a job twice
    running: dict[tuple[str, str], int | None] = defaultdict(lambda: None)
    for event, job, model, env in lines:  # the log is in real order (O_APPEND)
        if event == "start":
            assert running[(model, env)] is None, f"job {job} overlapped another on {model}"
            running[(model, env)] = int(job)
        else:
            assert running[(model, env)] == int(job)
            running[(model, env)] = None


def test_threads_share_the_queue_without_running_a_job_twice(
        tmp_path: Path, state_backend: StateBackend) -> None:
    queue = state_backend.queue()
    ids = fill(queue, models=4, versions=12)  # fewer deployments than workers
    log = tmp_path / "runs.log"
    handler = make_handler("count", log)

    def work(index: int) -> None:
        worker = Worker(queue, handler, worker_id=f"thread-{index}", heartbeat=False)
        for _ in range(2000):  # bounded; normally ends after a few dozen rounds
            if not worker.run_once():
                counts = queue.counts_by_state()
                if counts["queued"] + counts["running"] + counts["retrying"] == 0:
                    return
                threading.Event().wait(0.002)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert_each_ran_once_and_serially(log, ids)
    assert queue.counts_by_state()["done"] == len(ids)
    queue.close()


@pytest.mark.e2e
def test_processes_share_the_queue_without_running_a_job_twice(
        tmp_path: Path, state_backend: StateBackend) -> None:
    queue = state_backend.queue()
    ids = fill(queue, models=4, versions=15)  # fewer deployments than workers
    log = tmp_path / "runs.log"
    go = tmp_path / "go"
    workers = [start_worker_process(state_backend, "count", log, "--threads", "2",
                                    "--start-when", str(go)) for _ in range(3)]
    for _ in range(3000):  # bounded wait until every process is lined up at the start
        if len(log_lines(log.with_suffix(".ready"))) == len(workers):
            break
        threading.Event().wait(0.01)
    go.touch()
    for process in workers:
        _, stderr = process.communicate(timeout=90)
        assert process.returncode == 0, stderr
    assert_each_ran_once_and_serially(log, ids)
    done = queue.list("done", limit=1000)
    assert {job.id for job in done} == ids
    assert len({job.result["pid"] for job in done}) > 1  # the work really was shared
    queue.close()
