"""`gitops policy --changed-from` in a shallow checkout: GitLab clones the last 20 commits by
default, so a merge request with more commits than that leaves its diff base out. The gate's
CI jobs ask for a full clone, and the error says why when a checkout cannot reach the base."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from promoter.core.gitops_ci import gitops_ci
from tests.ci.local_runner import GIT, committed_manifests, git
from tests.conftest import EXAMPLES, ROOT, cli_runner


def _policy_job(document: dict[str, Any]) -> dict[str, Any]:
    """The manifests:policy job with its `extends` applied (GitLab deep-merges mappings)."""
    job = dict(document["manifests:policy"])
    parent = document[job.pop("extends")]
    return {**parent, **job, "variables": {**parent.get("variables", {}),
                                           **job.get("variables", {})}}


@pytest.mark.parametrize("source", ["promoter's .gitlab-ci.yml", "gitops init's"])
def test_the_policy_job_clones_deep_enough_to_reach_the_merge_requests_base(
        source: str) -> None:
    if source.startswith("promoter"):
        document = YAML(typ="safe", pure=True).load((ROOT / ".gitlab-ci.yml").read_text())
    else:
        document = gitops_ci("manifests", "python:3.11", "promoter")
    job = _policy_job(document)
    assert job["variables"]["GIT_DEPTH"] == "0"
    assert job["variables"]["KUBECTL_VERSION"]          # the parent's variables are kept
    assert "$CI_MERGE_REQUEST_DIFF_BASE_SHA" in " ".join(job["script"])


def test_a_base_outside_a_shallow_checkout_is_refused_naming_git_depth(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    origin = tmp_path / "origin"
    base = committed_manifests(origin)
    overlay = origin / "manifests/llm-chat/overlays/staging/kustomization.yaml"
    for n in range(3):   # the merge request's commits, more than the clone's depth
        overlay.write_text(overlay.read_text() + f"# review {n}\n")
        git(origin, "commit", "-qam", f"review {n}")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "2", f"file://{origin}", str(clone)],
                   check=True, capture_output=True, env={**GIT, "PATH": "/usr/bin:/bin"})
    monkeypatch.chdir(clone)
    code, _, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                      "policy", "manifests/", "--changed-from", base)
    assert code == 1 and f"cannot list the files changed since '{base}'" in err
    assert "shallow" in err and 'GIT_DEPTH: "0"' in err
    monkeypatch.chdir(origin)   # the same revision in a full checkout: judged, and allowed
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                        "policy", "manifests/", "--changed-from", base)
    assert code == 0, err
    assert "manifests/llm-chat/overlays/staging" in out
