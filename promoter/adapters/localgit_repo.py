"""Real git, driven through the CLI, for the local provider.

A bare working clone under the state directory talks to the configured remote (by default a
bare repository ``<state_dir>/gitops.git`` created on first use). Commits are built with a
private index (no checkout needed) and pushed with ``--force-with-lease``, so a branch that
moved under promoter is never overwritten blindly.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from promoter.errors import ConfigError, TransientError, UserError
from promoter.ports.forge import Action
from promoter.ports.git import FileContent, from_blob
from promoter.redaction import without_url_userinfo

_IDENTITY = {"GIT_AUTHOR_NAME": "promoter", "GIT_AUTHOR_EMAIL": "promoter@localhost",
             "GIT_COMMITTER_NAME": "promoter", "GIT_COMMITTER_EMAIL": "promoter@localhost",
             "GIT_TERMINAL_PROMPT": "0"}
_NO_SHA = "0" * 40


class GitFailed(Exception):
    def __init__(self, args: Sequence[str], stderr: str) -> None:
        # git.remote's userinfo is a credential: never in a message (git drops it from its
        # own stderr; the arguments still carry it).
        super().__init__(without_url_userinfo(f"git {' '.join(args)}: {stderr.strip()}"))
        self.stderr = stderr


class LocalRepo:
    def __init__(self, workdir: Path, remote: str, target_branch: str) -> None:
        self.workdir = workdir
        self.remote = remote
        self.target_branch = target_branch
        # What the clone's config holds: the remote without an http(s) credential, which
        # each git command gets from its environment instead (url.<remote>.insteadOf), so no
        # token rests in the state directory or shows in a process list.
        self.stored_remote = _without_http_credential(remote)
        self._credential_env = {} if self.stored_remote == remote else {
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{remote}.insteadOf",
            "GIT_CONFIG_VALUE_0": self.stored_remote}

    @classmethod
    def in_state_dir(cls, state_dir: Path, remote: str | None, target_branch: str,
                     initial_files: Callable[[], Mapping[str, str]] | None = None) -> LocalRepo:
        """``initial_files``: what the first commit of a new default remote holds."""
        if remote is None:
            bare = state_dir / "gitops.git"
            if not bare.exists():
                _create_remote(bare, target_branch, initial_files() if initial_files else {})
            remote = str(bare)
        repo = cls(state_dir / "git" / "work.git", remote, target_branch)
        repo.ensure_clone()
        return repo

    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> str:
        return self.git_bytes(*args, input=input, env=env, cwd=cwd).decode()

    def git_bytes(self, *args: str, input: bytes | None = None,
                  env: dict[str, str] | None = None, cwd: Path | None = None) -> bytes:
        """``git`` whose output is returned as it is (a blob may be binary)."""
        try:
            result = subprocess.run(
                ["git", *args], cwd=cwd or self.workdir, input=input, capture_output=True,
                stdin=None if input is not None else subprocess.DEVNULL,
                env={**os.environ, **_IDENTITY, **self._credential_env, **(env or {})},
                check=False, timeout=120)
        except FileNotFoundError:
            raise ConfigError("git is not installed", hint="install git (apt-get install git)") \
                from None
        if result.returncode:
            raise GitFailed(args, result.stderr.decode(errors="replace"))
        return result.stdout

    def ensure_clone(self) -> None:
        if (self.workdir / "HEAD").exists():
            # git.remote may have changed since the clone was made (or a clone made before
            # credentials were kept out of it holds one): follow the setting.
            if self.git("config", "--get", "remote.origin.url").strip() != self.stored_remote:
                self.git("remote", "set-url", "origin", self.stored_remote)
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "--bare")
        self.git("remote", "add", "origin", self.stored_remote)

    def fetch(self) -> None:
        try:
            self.git("fetch", "-q", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*")
        except GitFailed as exc:
            raise TransientError(without_url_userinfo(
                f"cannot fetch from the git remote {self.remote}: {exc.stderr}"),
                                 hint="check PROMOTER_GIT_REMOTE / git.remote") from None

    def head(self, branch: str) -> str | None:
        try:
            return self.git("rev-parse", "--verify", "-q",
                            f"refs/remotes/origin/{branch}^{{commit}}").strip() or None
        except GitFailed:
            return None

    def is_ancestor(self, commit: str, revision: str) -> bool:
        """``git merge-base --is-ancestor``: exit 0 yes, 1 no, 128 when either object is not
        in the clone (a revision the remote never had, or one pruned away): not contained."""
        try:
            self.git("merge-base", "--is-ancestor", commit, revision)
        except GitFailed:
            return False
        return True

    def merge_commit_of(self, commit: str, revision: str, depth: int = 500) -> str | None:
        """The merge commit on ``revision``'s first-parent line that merged ``commit`` (its
        second parent), among the newest ``depth`` merges; None when there is none."""
        try:
            lines = self.git("rev-list", "--first-parent", "--merges", "--parents",
                             f"--max-count={depth}", revision).splitlines()
        except GitFailed:
            return None
        for line in lines:
            merge, *parents = line.split()
            if parents[1:2] == [commit]:
                return merge
        return None

    def message(self, sha: str) -> str:
        return self.git("log", "-1", "--format=%B", sha)

    def list_files(self, ref: str, prefix: str) -> frozenset[str] | None:
        """Every file's path under ``prefix`` on the remote's branch ``ref``; None when the
        remote has no such branch."""
        if self.head(ref) is None:
            return None
        listing = self.git("ls-tree", "-r", "--name-only", "--full-tree",
                           f"refs/remotes/origin/{ref}", "--", prefix)
        return frozenset(listing.splitlines())

    def read(self, ref: str, paths: Sequence[str],
             prefixes: Sequence[str]) -> dict[str, FileContent]:
        remote_ref = f"refs/remotes/origin/{ref}"
        if self.head(ref) is None:
            return {}
        wanted = set(paths)
        if prefixes:
            listing = self.git("ls-tree", "-r", "--name-only", "--full-tree", remote_ref, "--",
                               *prefixes)
            wanted.update(listing.splitlines())
        present = self.git("ls-tree", "-r", "--name-only", "--full-tree", remote_ref, "--",
                           *sorted(wanted)).splitlines() if wanted else []
        return {path: from_blob(self.git_bytes("cat-file", "blob", f"{remote_ref}:{path}"))
                for path in present}

    def commit(self, base: str, actions: Sequence[Action], message: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git("read-tree", base, env=env)
            for action in actions:
                if action.kind == "delete":
                    # Mode 0 removes the entry; --force-remove would need a work tree.
                    self.git("update-index", "--index-info", env=env,
                             input=f"0 {'0' * 40}\t{action.path}\n".encode())
                    continue
                content = action.content or ""
                blob = self.git("hash-object", "-w", "--stdin", input=content if isinstance(
                    content, bytes) else content.encode()).strip()
                self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{action.path}",
                         env=env)
            tree = self.git("write-tree", env=env).strip()
        return self.git("commit-tree", tree, "-p", base, input=message.encode()).strip()

    def push(self, sha: str, branch: str, expected: str | None) -> None:
        """Move ``branch`` on the remote to ``sha`` only if it is still at ``expected``."""
        lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
        try:
            self.git("push", "-q", lease, "origin", f"{sha}:refs/heads/{branch}")
        except GitFailed as exc:
            raise TransientError(f"the remote refused the push to {branch}: {exc.stderr}",
                                 hint="someone else moved the branch; promoter looks again")\
                from None
        self.fetch()

    def delete(self, branch: str) -> None:
        if self.head(branch) is not None:
            self.git("push", "-q", "origin", "--delete", branch)
            self.fetch()

    def merge_commit(self, target_sha: str, source_sha: str, message: str) -> str:
        try:
            tree = self.git("merge-tree", "--write-tree", target_sha, source_sha).split()[0]
        except GitFailed:
            raise UserError("the branch conflicts with the target branch and cannot be merged",
                            hint="promote again so promoter rebuilds the branch") from None
        return self.git("commit-tree", tree, "-p", target_sha, "-p", source_sha,
                        input=message.encode()).strip()


def _without_http_credential(remote: str) -> str:
    """An http(s) remote without its userinfo (``https://oauth2:TOKEN@host/…`` →
    ``https://host/…``); any other remote as it is (an ssh login name is no secret)."""
    parts = urlsplit(remote)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return remote
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _create_remote(bare: Path, branch: str, files: Mapping[str, str]) -> None:
    """A bare repository with one commit on ``branch`` holding ``files`` (the GitOps
    scaffolding; none: an empty tree, as a fresh GitLab project has)."""
    bare.parent.mkdir(parents=True, exist_ok=True)
    seed = LocalRepo(bare, str(bare), branch)
    seed.git("init", "-q", "--bare", "-b", branch, str(bare), cwd=bare.parent)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        seed.git("read-tree", "--empty", env=env)
        for path, text in sorted(files.items()):
            blob = seed.git("hash-object", "-w", "--stdin", input=text.encode()).strip()
            seed.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = seed.git("write-tree", env=env).strip()
    message = b"Initialize the GitOps repository\n"
    if files:
        message += b"\nScaffolding from `promoter gitops init`: Argo CD, admission policies, CI.\n"
    first = seed.git("commit-tree", tree, input=message).strip()
    seed.git("update-ref", f"refs/heads/{branch}", first, _NO_SHA)
