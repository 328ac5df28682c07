"""SIGKILL the worker at every step boundary of a promotion (and once in the middle of a blob
upload), start a new worker, let it finish: the end state is the crash-free run's.

The runner is the real handler and the real Worker on a real state dir; the second worker
re-claims the job once the dead one's 2 s lease runs out, so every job ends on attempt 2.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.stack import make_standin, version_tags
from tests.gitlab.standin.server import StandIn
from tests.pipeline_faults.conftest import Reference, Stack
from tests.pipeline_faults.harness import ENV, Case, verify_signature

pytestmark = pytest.mark.e2e

STEPS = ("resolve", "policy", "image", "sign", "render", "merge request", "write-back")
MANIFESTS = "manifests/"


@pytest.fixture
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    server = make_standin(tmp_path_factory.mktemp("standin"))
    yield server
    server.stop()


def crash_then_finish(case: Case, stack: Stack, *crash_args: str, killed: str) -> dict[str, Any]:
    job_id = case.enqueue(stack.model, stack.version)
    code = case.run(job_id, *crash_args, label="crashed")
    assert code == -signal.SIGKILL, case.log("crashed")
    assert f"KILLED {killed}" in case.log("crashed"), case.log("crashed")
    assert case.job(job_id)["state"] == "running"  # still leased by the dead worker

    code = case.run(job_id, label="restarted")
    job = case.job(job_id)
    assert code == 0 and job["state"] == "done", case.log("restarted")
    assert job["attempts"] == 2, job
    return job


def assert_same_end_state(case: Case, reference: Reference, job: dict[str, Any],
                          expected_files: dict[str, str] | None = None) -> None:
    [mr] = case.open_mrs()  # exactly one open MR for the key
    assert mr["source_branch"] == reference.branch
    assert case.commits_ahead(mr["source_branch"]) == 1  # exactly one commit for the change
    assert case.commit_count("main") == reference.main_commits  # the target is untouched
    if case.gitlab is not None:  # not even an unreachable duplicate commit
        assert case.gitlab.commits_created == 1
    wanted = expected_files or reference.files
    got = {p: t for p, t in case.files(mr["source_branch"]).items() if p.startswith(MANIFESTS)}
    assert got == {p: t for p, t in wanted.items() if p.startswith(MANIFESTS)}
    assert job["result"]["status"] == "mr_opened"
    image = job["result"]["image"]
    assert image and "@sha256:" in image and image in "".join(got.values())
    verified = verify_signature(case, image)
    assert verified.digest == image.split("@", 1)[1] and verified.formats


@pytest.mark.parametrize("step", STEPS)
def test_kill_after_each_step_finishes_like_a_clean_run(stack: Stack, reference: Reference,
                                                        step: str) -> None:
    case = stack.case(f"crash-{step.replace(' ', '-')}")
    job = crash_then_finish(case, stack, "--kill-after", step, killed=f"after {step}")
    assert_same_end_state(case, reference, job)
    if step == "image":  # the image recorded before the crash is reused, not rebuilt
        assert job["steps"]["image"]["digest"] == reference.job["steps"]["image"]["digest"]
    tags = version_tags(stack.mlflow.url, stack.model, stack.version)
    assert tags[f"promoter.{ENV}.status"] == "mr_opened"


def test_kill_after_merge_request_against_gitlab(stack: Stack, reference: Reference,
                                                 standin: StandIn) -> None:
    case = stack.case("crash-gitlab-merge-request", gitlab=standin)
    job = crash_then_finish(case, stack, "--kill-after", "merge request",
                            killed="after merge request")
    assert_same_end_state(case, reference, job)
    assert [mr.state for mr in standin.project.mrs.values()] == ["opened"]


def test_kill_in_the_middle_of_a_blob_upload(stack: Stack, reference: Reference) -> None:
    # Its own repository, so the image's blobs really are uploaded (not found there already).
    case = stack.case("crash-mid-upload", prefix="upload")
    job = crash_then_finish(case, stack, "--kill-mid-upload", killed="mid-upload of sha256:")
    same_image_elsewhere = {
        path: text.replace(f"{stack.registry}/faults/", f"{stack.registry}/upload/")
        for path, text in reference.files.items()}
    assert_same_end_state(case, reference, job, same_image_elsewhere)
    assert job["steps"]["image"]["digest"] == reference.job["steps"]["image"]["digest"]
