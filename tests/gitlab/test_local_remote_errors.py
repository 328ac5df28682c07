"""The local provider's git remote may carry a token in its URL (``https://oauth2:TOKEN@…``,
as GitLab's docs show for HTTPS clones): git drops it from its own messages, promoter's must
too, since they reach logs, the CLI and MLflow's failure reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoter.adapters.localgit_repo import GitFailed, LocalRepo
from promoter.errors import TransientError

TOKEN = "glpat-SECRETTOKEN123"
REMOTE = f"https://oauth2:{TOKEN}@127.0.0.1:9/group/gitops.git"   # nothing listens on :9


def test_a_failed_fetch_names_the_remote_without_its_token(tmp_path: Path) -> None:
    repo = LocalRepo(tmp_path / "work.git", REMOTE, "main")
    repo.ensure_clone()
    with pytest.raises(TransientError) as failed:
        repo.fetch()
    text = f"{failed.value.message} {failed.value.hint}"
    assert TOKEN not in text and "127.0.0.1:9/group/gitops.git" in text


def test_a_failed_git_command_quotes_its_arguments_without_the_token(tmp_path: Path) -> None:
    repo = LocalRepo(tmp_path / "work.git", REMOTE, "main")
    repo.ensure_clone()
    with pytest.raises(GitFailed) as failed:
        repo.git("remote", "add", "origin", REMOTE)    # exists already: git refuses
    assert TOKEN not in str(failed.value) and "remote add origin" in str(failed.value)
