"""The stand-in's repository: a real bare git repository driven through the git CLI."""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_ENV = {"GIT_AUTHOR_NAME": "Stand-in", "GIT_AUTHOR_EMAIL": "standin@example.test",
        "GIT_COMMITTER_NAME": "Stand-in", "GIT_COMMITTER_EMAIL": "standin@example.test",
        "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


class ApiError(Exception):
    """An answer in GitLab's error shape."""

    def __init__(self, status: int, message: Any, key: str = "message") -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.body = {key: message}


class GitRepo:
    def __init__(self, path: Path, default_branch: str = "main") -> None:
        self.path = path
        self.default_branch = default_branch
        self.git("init", "-q", "--bare", "-b", default_branch, str(path), cwd=path.parent)

    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, check: bool = True) -> str:
        result = subprocess.run(["git", *args], cwd=cwd or self.path, input=input,
                                capture_output=True, env={**os.environ, **_ENV, **(env or {})},
                                check=False, timeout=60)
        if check and result.returncode:
            raise RuntimeError(f"git {' '.join(args)}: {result.stderr.decode()}")
        return result.stdout.decode()

    def head(self, branch: str) -> str | None:
        out = self.git("rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}",
                       check=False).strip()
        return out or None

    def branches(self) -> list[str]:
        out = self.git("for-each-ref", "--format=%(refname:strip=2)", "refs/heads")
        return sorted(out.split())

    def commit_info(self, sha: str) -> dict[str, Any] | None:
        out = self.git("log", "-1", "--format=%H%x00%P%x00%an%x00%ae%x00%cI%x00%B",
                       sha, "--", check=False)
        if not out:
            return None
        full, parents, name, email, date, message = out.split("\x00", 5)
        message = message.rstrip("\n") + "\n"
        return {"id": full, "short_id": full[:8], "title": message.splitlines()[0],
                "message": message, "parent_ids": parents.split(), "author_name": name,
                "author_email": email, "authored_date": date, "committer_name": name,
                "committer_email": email, "committed_date": date, "created_at": date}

    def merge_base(self, refs: list[str]) -> str | None:
        """The best common ancestor of ``refs`` (git merge-base), None when they share none."""
        return self.git("merge-base", *refs, check=False).strip() or None

    def tree(self, ref: str, path: str, recursive: bool) -> list[dict[str, Any]] | None:
        if self.head(ref) is None and not self._is_sha(ref):
            return None
        spec = f"{ref}:{path}" if path else f"{ref}^{{tree}}"
        if self.git("cat-file", "-t", spec, check=False).strip() != "tree":
            return None
        args = ["ls-tree", "--full-tree"] + (["-r", "-t"] if recursive else [])
        out = self.git(*args, ref, "--", f"{path}/" if path else ".")
        items = []
        for line in out.splitlines():
            meta, item_path = line.split("\t", 1)
            mode, kind, sha = meta.split()
            items.append({"id": sha, "name": item_path.rsplit("/", 1)[-1], "type": kind,
                          "path": item_path, "mode": mode})
        return items

    def file(self, ref: str, path: str) -> bytes | None:
        spec = f"{ref}:{path}"
        if self.git("cat-file", "-t", spec, check=False).strip() != "blob":
            return None
        result = subprocess.run(["git", "cat-file", "blob", spec], cwd=self.path,
                                capture_output=True, check=True, timeout=60)
        return result.stdout

    def _is_sha(self, ref: str) -> bool:
        return self.git("cat-file", "-t", ref, check=False).strip() == "commit"

    def commit_actions(self, branch: str, base: str | None, actions: list[dict[str, Any]],
                       message: str, author: tuple[str, str] | None = None) -> str:
        """One commit of GitLab-style actions on ``base``, stored as ``branch``."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if author:
                env.update(GIT_AUTHOR_NAME=author[0], GIT_AUTHOR_EMAIL=author[1],
                           GIT_COMMITTER_NAME=author[0], GIT_COMMITTER_EMAIL=author[1])
            if base:
                self.git("read-tree", base, env=env)
            for action in actions:
                self._apply(action, env)
            tree = self.git("write-tree", env=env).strip()
            parents = ["-p", base] if base else []
            sha = self.git("commit-tree", tree, *parents, input=message.encode(), env=env).strip()
        old = self.head(branch) or "0" * 40
        self.git("update-ref", f"refs/heads/{branch}", sha, old)
        return sha

    def _apply(self, action: dict[str, Any], env: dict[str, str]) -> None:
        kind, path = action.get("action"), str(action.get("file_path") or "")
        if not path or ".." in path.split("/") or path.startswith("/"):
            raise ApiError(400, "Path cannot include directory traversal")
        # The index starts as the base tree, so it also sees earlier actions of this commit.
        listed = self.git("ls-files", "--", path, env=env).splitlines()
        exists = path in listed
        if kind == "create" and any(line.startswith(path + "/") for line in listed):
            raise ApiError(400, "A directory with this name already exists")  # Gitaly's words
        if kind == "create" and exists:
            raise ApiError(400, "A file with this name already exists")
        if kind in ("update", "delete") and not exists:
            raise ApiError(400, "A file with this name doesn't exist")
        if kind == "delete":
            # A bare repository has no work tree for --force-remove; mode 0 in --index-info
            # removes the entry from the index as well.
            self.git("update-index", "--index-info", env=env,
                     input=f"0 {'0' * 40}\t{path}\n".encode())
            return
        if kind not in ("create", "update"):
            raise ApiError(400, f"action is invalid: {kind}", key="error")
        content = str(action.get("content") or "").encode()
        if action.get("encoding") == "base64":
            content = base64.b64decode(content)
        blob = self.git("hash-object", "-w", "--stdin", input=content).strip()
        self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)

    def merge(self, target: str, source: str, message: str, *,
              squash: bool = False) -> str | None:
        """A real merge commit of ``source`` into ``target`` (``squash``: one commit of the
        merged tree on ``target`` alone, as GitLab's squash then fast-forward); None on
        conflicts."""
        target_sha, source_sha = self.head(target), self.head(source)
        assert target_sha and source_sha
        out = self.git("merge-tree", "--write-tree", target_sha, source_sha, check=False)
        tree = out.split("\n", 1)[0].strip()
        if "CONFLICT" in out or len(tree) != 40:
            return None
        parents = ["-p", target_sha] if squash else ["-p", target_sha, "-p", source_sha]
        sha = self.git("commit-tree", tree, *parents, input=message.encode()).strip()
        self.git("update-ref", f"refs/heads/{target}", sha, target_sha)
        return sha

    def delete_branch(self, branch: str) -> None:
        self.git("update-ref", "-d", f"refs/heads/{branch}")

    def count(self, ref: str = "--all") -> int:
        return int(self.git("rev-list", "--count", ref).strip())

    def checkout_to(self, ref: str, directory: Path) -> None:
        """Write the tree of ``ref`` into ``directory`` (for validating the merged result)."""
        directory.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref], cwd=self.path, capture_output=True,
                                 check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True,
                       timeout=60)
