"""The CI jobs for promoter's own deployment, read and run by gitlab-ci-local 4.56.0: image:build
runs on tags and on the default branch when what goes into the image changed, never on merge
requests; deploy:validate runs on merge requests touching deploy/ and fails a broken overlay.

As in tests/ci: the repositories are real git repositories with an ``origin`` (gitlab-ci-local
evaluates ``rules:changes`` against ``origin/<default branch>``), and a job runs in the shell
executor with the ``image`` keys dropped. buildah itself does not run here (no buildah on this
machine); the job's rules, configuration and schema are what is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.ci.local_runner import git, requires_gitlab_ci_local, without_images
from tests.conftest import ROOT, requires_kubectl

pytestmark = [
    pytest.mark.e2e,
    requires_kubectl,
    requires_gitlab_ci_local,
]
class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path

    def change(self, relative: str, message: str) -> None:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((path.read_text() if path.exists() else "") + "# changed\n")
        git(self.path, "add", "-A")
        git(self.path, "commit", "-qm", message)

    def when(self, *variables: str) -> dict[str, str]:
        args = ["gitlab-ci-local", "--list-json"]
        for variable in variables:
            args += ["--variable", variable]
        done = subprocess.run(args, cwd=self.path, capture_output=True, text=True, timeout=120,
                              check=True)
        return {job["name"]: job["when"] for job in json.loads(done.stdout)}

    def run(self, job: str) -> tuple[int, str]:
        done = subprocess.run(
            ["gitlab-ci-local", "--variable", "CI_PIPELINE_SOURCE=merge_request_event",
             "--variable", f"PYTHONPATH={ROOT}", job],
            cwd=self.path, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """promoter's repository, reduced to what the jobs read, with main pushed to origin."""
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / ".gitlab-ci.yml").write_text(without_images((ROOT / ".gitlab-ci.yml").read_text()))
    shutil.copytree(ROOT / "deploy", work / "deploy")
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, work / name)
    (work / "promoter").mkdir()
    (work / "promoter/cli.py").write_text("# stand-in for the package sources\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "main")
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "-q", "origin", "main")
    git(work, "fetch", "-q", "origin")
    git(work, "remote", "set-head", "origin", "main")
    return Repo(work)


def test_image_build_runs_on_tags_and_on_default_branch_changes_to_the_image(
        repo: Repo) -> None:
    assert repo.when()["image:build"] == "never"  # main, nothing changed
    assert repo.when("CI_COMMIT_TAG=v1.2.0")["image:build"] == "on_success"
    repo.change("README.md", "docs only")
    assert repo.when()["image:build"] == "never"
    repo.change("promoter/cli.py", "a code change on main")
    assert repo.when()["image:build"] == "on_success"


@pytest.mark.parametrize("path", ["deploy/Containerfile", "pyproject.toml",
                                  "templates/kserve/runtime.yaml"])
def test_image_build_follows_each_input_of_the_image(repo: Repo, path: str) -> None:
    repo.change(path, f"change {path}")
    assert repo.when()["image:build"] == "on_success"


def test_merge_requests_validate_deploy_but_build_no_image(repo: Repo) -> None:
    git(repo.path, "checkout", "-qb", "feature")
    repo.change("promoter/cli.py", "code")
    when = repo.when("CI_PIPELINE_SOURCE=merge_request_event", "CI_COMMIT_BRANCH=")
    assert when["image:build"] == "never"
    assert when["deploy:validate"] == "never"  # deploy/ untouched
    repo.change("deploy/base/promoter.yaml", "configuration")
    when = repo.when("CI_PIPELINE_SOURCE=merge_request_event", "CI_COMMIT_BRANCH=")
    assert when["deploy:validate"] == "on_success"
    assert when["image:build"] == "never"


def test_deploy_validate_job_passes_the_overlays_and_fails_a_broken_one(repo: Repo) -> None:
    git(repo.path, "checkout", "-qb", "feature")
    repo.change("deploy/base/promoter.yaml", "configuration")
    code, out = repo.run("deploy:validate")
    assert code == 0, out
    assert "ok   deploy/overlays/postgresql" in out and "ok   deploy/overlays/sqlite" in out
    patch = repo.path / "deploy/overlays/sqlite/deployment-patch.yaml"
    patch.write_text(patch.read_text().replace("claimName: promoter-state",
                                               "claimNam: promoter-state"))
    repo.change("deploy/overlays/sqlite/deployment-patch.yaml", "break the overlay")
    code, out = repo.run("deploy:validate")
    assert code != 0
    assert "FAIL" in out and "deploy/overlays/sqlite" in out


def test_preview_resolves_the_image_job(repo: Repo) -> None:
    done = subprocess.run(["gitlab-ci-local", "--preview"], cwd=repo.path, capture_output=True,
                          text=True, timeout=120, check=True)
    document = YAML(typ="safe").load(done.stdout)
    job = document["image:build"]
    assert job["stage"] == "image" and "image" in document["stages"]
    script = "\n".join(job["script"])
    assert "buildah build --file deploy/Containerfile" in script
    assert "buildah push --digestfile" in script
    assert job["variables"]["STORAGE_DRIVER"] == "vfs"
    assert document["deploy:validate"]["script"] == ["promoter validate deploy/"]
