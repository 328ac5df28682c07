"""`promoter jobs list|show|retry`, run as a real subprocess against a queue in a tmp state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promoter.errors import PermanentError
from promoter.service.queue import JobKey, JobQueue
from promoter.service.worker import Worker
from tests.queue.conftest import REPO_ROOT


def promoter(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROMOTER_")}
    env.update({"PROMOTER_STATE_DIR": str(state_dir), "PYTHONPATH": str(REPO_ROOT)})
    return subprocess.run([sys.executable, "-m", "promoter", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """Three jobs: one done with a step, one dead with a reason, one queued."""
    state = tmp_path / "state"
    queue = JobQueue.open(state)
    queue.enqueue(JobKey("fraud-detector", "7", "production", "promote"))
    queue.enqueue(JobKey("churn", "3", "staging", "promote"))

    def handler(job, ctx):  # type: ignore[no-untyped-def]
        if job.key.model == "churn":
            raise PermanentError("GitLab answered 403 for project ml/deploy")
        ctx.record_step("render", {"files": 4})
        return {"mr_url": "http://gitlab.test/ml/deploy/-/merge_requests/12"}

    worker = Worker(queue, handler, worker_id="w", heartbeat=False)
    while worker.run_once():
        pass
    queue.enqueue(JobKey("fraud-detector", "8", "production", "promote"))
    queue.close()
    return state


def test_list_shows_every_job_newest_first(state_dir: Path) -> None:
    result = promoter(state_dir, "jobs", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "ATTEMPTS"]
    assert [line.split()[:2] for line in lines[1:]] == [["3", "queued"], ["2", "dead"],
                                                        ["1", "done"]]
    assert "GitLab answered 403" in lines[2]


def test_list_filters_by_state_as_json(state_dir: Path) -> None:
    result = promoter(state_dir, "jobs", "list", "--state", "dead", "--output", "json")
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert [(j["id"], j["model"], j["state"]) for j in jobs] == [(2, "churn", "dead")]


def test_show_gives_state_attempts_reason_steps_and_times(state_dir: Path) -> None:
    text = promoter(state_dir, "jobs", "show", "1")
    assert text.returncode == 0, text.stderr
    assert "promote fraud-detector v7 → production" in text.stdout
    assert "state:       done" in text.stdout
    assert 'render: {"files": 4}' in text.stdout
    data = json.loads(promoter(state_dir, "jobs", "show", "1", "-o", "json").stdout)
    assert data["steps"] == {"render": {"files": 4}}
    assert data["attempts"] == 1 and data["created_at"] <= data["updated_at"]
    assert data["result"]["mr_url"].endswith("/12")


def test_retry_requeues_a_dead_job(state_dir: Path) -> None:
    result = promoter(state_dir, "jobs", "retry", "2")
    assert result.returncode == 0, result.stderr
    assert "job 2 queued again" in result.stdout
    queue = JobQueue.open(state_dir)
    assert (queue.get(2).state, queue.get(2).attempts) == ("queued", 0)
    queue.close()


def test_mistakes_are_explained_with_exit_codes_1_and_2(state_dir: Path) -> None:
    not_dead = promoter(state_dir, "jobs", "retry", "1")
    assert not_dead.returncode == 1
    assert "job 1 is done" in not_dead.stderr
    unknown = promoter(state_dir, "jobs", "show", "99")
    assert unknown.returncode == 1 and "no job with id 99" in unknown.stderr
    bad_state = promoter(state_dir, "jobs", "list", "--state", "finished")
    assert bad_state.returncode == 2 and "not one of queued, running" in bad_state.stderr


@pytest.mark.parametrize("limit", ["9223372036854775808", "0"])
def test_a_limit_no_store_can_take_is_a_usage_error(state_dir: Path, limit: str) -> None:
    """SQLite cannot bind 2**63 (OverflowError, exit 3), PostgreSQL calls it bigint out of
    range: the option is bounded as job ids are, so the typo is named before any store."""
    result = promoter(state_dir, "jobs", "list", "--limit", limit)
    assert result.returncode == 2, result.stderr
    assert "--limit" in result.stderr and "unexpected error" not in result.stderr
    largest = promoter(state_dir, "jobs", "list", "-n", "9223372036854775807", "-o", "json")
    assert largest.returncode == 0 and len(json.loads(largest.stdout)) == 3


def test_an_empty_state_dir_lists_no_jobs(tmp_path: Path) -> None:
    result = promoter(tmp_path / "fresh", "jobs", "list")
    assert (result.returncode, result.stdout.strip()) == (0, "no jobs")
