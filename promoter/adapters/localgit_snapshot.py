"""The local provider's branches read without its clone, for read-only commands.

The provider's bare clone under the state directory (``git/work.git``) is shared with every
process on that directory, and opening it makes its ``origin`` follow the opener's git.remote
(localgit_repo.LocalRepo.ensure_clone): a `policy check` run with another promoter.yaml would
re-point a running `promoter serve` at another repository. So a read-only command fetches the
remote into a throwaway bare repository instead, removed when it is done; and a default
remote that does not exist yet (``<state_dir>/gitops.git`` before the first promotion) holds
nothing deployed, so it is read as empty rather than created.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from promoter.adapters.localgit_repo import LocalRepo
from promoter.ports.git import BranchReader, texts
from promoter.settings import Settings


class RemoteSnapshot:
    """``BranchReader`` over a fetch of the remote's branches into ``workdir`` (fetched once,
    on the first read, so a check that reads nothing never reaches the remote)."""

    def __init__(self, remote: str, workdir: Path, target_branch: str) -> None:
        self._repo = LocalRepo(workdir, remote, target_branch)
        self._fetched = False

    def _fetched_repo(self) -> LocalRepo:
        if not self._fetched:
            self._repo.ensure_clone()
            self._repo.fetch()   # TransientError when the remote cannot be read
            self._fetched = True
        return self._repo

    def files(self, prefix: str, ref: str) -> dict[str, str]:
        return texts(self._fetched_repo().read(ref, [], [prefix]))

    def paths(self, prefix: str, ref: str) -> frozenset[str] | None:
        return self._fetched_repo().list_files(ref, prefix)

    def read_many(self, paths: Sequence[str], ref: str) -> dict[str, str]:
        return texts(self._fetched_repo().read(ref, list(paths), []))

    def read(self, path: str, ref: str) -> str | None:
        return self.read_many([path], ref).get(path)


class NothingDeployed:
    """``BranchReader`` of a repository that does not exist yet: no branch, no file."""

    def files(self, prefix: str, ref: str) -> dict[str, str]:
        return {}

    def paths(self, prefix: str, ref: str) -> frozenset[str] | None:
        return None

    def read_many(self, paths: Sequence[str], ref: str) -> dict[str, str]:
        return {}

    def read(self, path: str, ref: str) -> str | None:
        return None


@contextmanager
def reader_from_settings(settings: Settings) -> Iterator[BranchReader]:
    """The configured remote's branches (git.remote, else the default bare repository in the
    state directory), read without writing to the state directory."""
    remote = settings.git.remote
    if remote is None:
        default = Path(settings.state_dir) / "gitops.git"
        if not default.exists():
            yield NothingDeployed()
            return
        remote = str(default)
    with tempfile.TemporaryDirectory(prefix="promoter-read-") as scratch:
        yield RemoteSnapshot(remote, Path(scratch) / "snapshot.git", settings.git.target_branch)
