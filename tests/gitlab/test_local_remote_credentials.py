"""A token in ``git.remote`` (``https://oauth2:TOKEN@host/…``) authenticates every git
command but is never written into the working clone's config under the state directory (a
volume others back up or read) nor passed on a command line; served here by git's own
``git http-backend`` behind basic auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoter.adapters.localgit_repo import LocalRepo
from promoter.errors import TransientError
from promoter.ports.forge import Action
from tests.gitlab.git_http_server import git_over_http

TOKEN = "glpat-SECRETTOKEN123"


def _served(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    LocalRepo.in_state_dir(root, None, "main", lambda: {"README.md": "gitops\n"})
    return root


def test_the_token_authenticates_but_stays_out_of_the_clone(tmp_path: Path) -> None:
    root = _served(tmp_path)
    with git_over_http(root, "oauth2", TOKEN) as (port, seen):
        repo = LocalRepo(tmp_path / "work.git", f"http://oauth2:{TOKEN}@127.0.0.1:{port}/"
                         "gitops.git", "main")
        repo.ensure_clone()
        repo.fetch()
        base = repo.head("main")
        assert base is not None
        sha = repo.commit(base, [Action("create", "a.yaml", "a: 1\n")], "add a")
        repo.push(sha, "promote/a", None)
        assert repo.head("promote/a") == sha and any(seen)
    stored = (tmp_path / "work.git" / "config").read_text()
    assert TOKEN not in stored and f"http://127.0.0.1:{port}/gitops.git" in stored
    assert repo.git("config", "--get", "remote.origin.url").strip() == \
        f"http://127.0.0.1:{port}/gitops.git"


def test_a_clone_that_holds_the_token_from_before_is_cleaned(tmp_path: Path) -> None:
    work = tmp_path / "work.git"
    remote = f"http://oauth2:{TOKEN}@127.0.0.1:9/gitops.git"
    LocalRepo(work, remote, "main").git("init", "-q", "--bare", str(work), cwd=tmp_path)
    LocalRepo(work, remote, "main").git("config", "remote.origin.url", remote)
    LocalRepo(work, remote, "main").ensure_clone()
    assert TOKEN not in (work / "config").read_text()


def test_without_the_token_the_remote_refuses(tmp_path: Path) -> None:
    """The served remote really asks for the credential, so the test above proves git sent
    the one promoter keeps out of the clone."""
    root = _served(tmp_path)
    with git_over_http(root, "oauth2", TOKEN) as (port, _):
        repo = LocalRepo(tmp_path / "work.git", f"http://oauth2:wrong@127.0.0.1:{port}/"
                         "gitops.git", "main")
        repo.ensure_clone()
        with pytest.raises(TransientError) as failed:
            repo.fetch()
    assert "wrong" not in f"{failed.value.message} {failed.value.hint}"
