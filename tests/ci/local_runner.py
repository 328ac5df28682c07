"""What every gitlab-ci-local test shares: the skip when it is not installed, git with a fixed
identity, and a CI file with its ``image`` keys dropped (the shell executor runs only jobs
without one, and no container runtime runs here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from ruamel.yaml import YAML

requires_gitlab_ci_local = pytest.mark.skipif(
    shutil.which("gitlab-ci-local") is None or shutil.which("rsync") is None,
    reason="gitlab-ci-local (npm, 4.56.0) or rsync is not installed; "
           "`make install-test` installs both")
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@localhost"}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, **GIT})


def committed_manifests(repo: Path) -> str:
    """A new git repository at ``repo`` whose one commit on main is the project's manifests/
    tree (the GitOps repository as promoter writes it); its commit id."""
    from tests.conftest import ROOT

    shutil.copytree(ROOT / "manifests", repo / "manifests")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()


def without_images(text: str) -> str:
    """The CI file unchanged but for its jobs' (and default's) ``image`` keys."""
    yaml = YAML()
    document = yaml.load(text)
    for value in document.values():
        if isinstance(value, dict):
            value.pop("image", None)
    out = StringIO()
    yaml.dump(document, out)
    return out.getvalue()
