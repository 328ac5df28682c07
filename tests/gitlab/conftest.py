"""Both git providers behind one test harness: GitLab (python-gitlab → stand-in over real HTTP)
and the embedded local provider (real git remote + SQLite). Behaviour tests run on both."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import gitlab
import pytest

from promoter.adapters.gitlab import connect
from promoter.adapters.gitlab_provider import GitLabProvider
from promoter.adapters.local_mrs import LocalMrStore
from promoter.adapters.localgit import LocalForge, LocalGitProvider
from promoter.adapters.localgit_repo import LocalRepo
from promoter.core.mr_text import note_slug
from promoter.ports.git import GitProvider, MergeRequest, Proposal
from promoter.state.pushed_heads import PushedHeads
from tests.gitlab import trees
from tests.gitlab.standin.server import StandIn
from tests.gitlab.standin.state import PROFILES

NAME, ENV, MODEL = "fraud-detector", "production", "Fraud Detector"
README = "# GitOps\n"


def proposal(version: str = "1", **changes: Any) -> Proposal:
    base = Proposal(
        model=MODEL, name=NAME, env=ENV, version=version,
        files=trees.rendered(NAME, ENV, version, replicas=int(version) + 1),
        managed_prefixes=trees.managed_prefixes(NAME, ENV),
        title=f"Promote {MODEL} version {version} to {ENV}",
        description=f"Version {version} of {MODEL}.", labels=("promoter", f"env::{ENV}"),
        approvals_required=2, notes={"promoter: status": f"version {version} proposed"})
    return dataclasses.replace(base, **changes)


class Harness(Protocol):
    """What a test does as the reviewers, the humans and the auditor of one provider."""

    provider: GitProvider
    kind: str
    enforces_approvals: bool                 # False on GitLab CE/Free: no approval rules

    def commits(self, ref: str = ...) -> int: ...
    def tree(self, ref: str) -> str | None: ...
    def mrs(self) -> list[MergeRequest]: ...
    def notes(self, iid: int) -> list[str]: ...
    def human_commit(self, branch: str, path: str, content: str,
                     create: bool = False) -> str: ...
    def human_close(self, iid: int) -> None: ...
    def add_label(self, iid: int, label: str) -> None: ...
    def approve(self, iid: int, user: str) -> None: ...
    def merge(self, iid: int, sha: str | None) -> None: ...
    def export(self, ref: str, directory: Path) -> None: ...


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=60).stdout


class GitLabHarness:
    kind = "gitlab"

    def __init__(self, standin: StandIn, tmp: Path, **provider_options: Any) -> None:
        self.standin = standin
        self.enforces_approvals = standin.profile.edition == "ee"
        forge = connect(standin.base_url, "bot-token", "group/gitops", timeout_seconds=2,
                        backoff_seconds=0.01)
        self.ledger = PushedHeads(tmp / "state")
        self.provider = GitLabProvider(forge, self.ledger, backoff_seconds=0.01,
                                       **provider_options)

    def as_user(self, token: str) -> Any:
        return gitlab.Gitlab(self.standin.base_url, private_token=token,
                             timeout=10).projects.get("group/gitops", lazy=True)

    def commits(self, ref: str = "--all") -> int:
        return self.standin.repo.count(ref)

    def tree(self, ref: str) -> str | None:
        head = self.standin.repo.head(ref)
        return self.standin.repo.git("rev-parse", f"{head}^{{tree}}").strip() if head else None

    def mrs(self) -> list[MergeRequest]:
        from promoter.adapters.gitlab import to_merge_request

        return [to_merge_request(self.standin.project.mr_json(mr))
                for mr in self.standin.project.mrs.values()]

    def notes(self, iid: int) -> list[str]:
        return [note["body"] for note in self.standin.project.mrs[iid].notes]

    def human_commit(self, branch: str, path: str, content: str,
                     create: bool = False) -> str:
        commit = self.as_user("alice-token").commits.create({
            "branch": branch, "commit_message": "Tune replicas by hand",
            "actions": [{"action": "create" if create else "update", "file_path": path,
                         "content": content}]})
        return str(commit.id)

    def human_close(self, iid: int) -> None:
        self.as_user("alice-token").mergerequests.update(iid, {"state_event": "close"})

    def add_label(self, iid: int, label: str) -> None:
        self.as_user("alice-token").mergerequests.update(iid, {"add_labels": label})

    def approve(self, iid: int, user: str) -> None:
        self.as_user(f"{user}-token").mergerequests.get(iid, lazy=True).approve()

    def unapprove(self, iid: int, user: str) -> None:
        self.as_user(f"{user}-token").mergerequests.get(iid, lazy=True).unapprove()

    def delete_mr(self, iid: int, user: str = "alice") -> None:
        """A project owner deletes the MR (the UI's "Delete", or the API)."""
        self.as_user(f"{user}-token").mergerequests.delete(iid)

    def merge(self, iid: int, sha: str | None) -> None:
        project = self.as_user("alice-token")
        project.manager.gitlab.http_put(
            f"/projects/{self.standin.project.id}/merge_requests/{iid}/merge",
            post_data={"sha": sha})

    def export(self, ref: str, directory: Path) -> None:
        self.standin.repo.checkout_to(ref, directory)


class LocalHarness:
    kind = "local"
    enforces_approvals = True

    def __init__(self, tmp: Path, **provider_options: Any) -> None:
        self.remote = tmp / "remote.git"
        git("init", "-q", "--bare", "-b", "main", str(self.remote), cwd=tmp)
        self.human = tmp / "human"
        git("clone", "-q", str(self.remote), str(self.human), cwd=tmp)
        git("config", "user.email", "alice@example.test", cwd=self.human)
        git("config", "user.name", "alice", cwd=self.human)
        (self.human / "README.md").write_text(README)
        git("add", "README.md", cwd=self.human)
        git("commit", "-q", "-m", "Initial commit", cwd=self.human)
        git("push", "-q", "origin", "main", cwd=self.human)
        repo = LocalRepo.in_state_dir(tmp / "state", str(self.remote), "main")
        self.forge = LocalForge(repo, LocalMrStore(tmp / "state"))
        self.ledger = PushedHeads(tmp / "state")  # the same record GitLab's provider writes
        self.provider = LocalGitProvider(self.forge, sleep=lambda _: None, pushes=self.ledger,
                                         **provider_options)

    def commits(self, ref: str = "--all") -> int:
        return int(git("rev-list", "--count", ref, cwd=self.remote).strip())

    def tree(self, ref: str) -> str | None:
        found = subprocess.run(["git", "rev-parse", "--verify", "-q", f"{ref}^{{tree}}"],
                               cwd=self.remote, capture_output=True, text=True, check=False)
        return found.stdout.strip() or None

    def mrs(self) -> list[MergeRequest]:
        return self.provider.list_mrs("all")

    def notes(self, iid: int) -> list[str]:
        return self.provider.notes(iid)

    def human_commit(self, branch: str, path: str, content: str,
                     create: bool = False) -> str:
        git("fetch", "-q", "origin", cwd=self.human)
        git("checkout", "-q", "-B", branch, f"origin/{branch}", cwd=self.human)
        (self.human / path).parent.mkdir(parents=True, exist_ok=True)
        (self.human / path).write_text(content)
        git("add", path, cwd=self.human)
        git("commit", "-q", "-am", "Tune replicas by hand", cwd=self.human)
        git("push", "-q", "origin", branch, cwd=self.human)
        return git("rev-parse", "HEAD", cwd=self.human).strip()

    def human_close(self, iid: int) -> None:
        self.provider.close(iid, "alice")

    def add_label(self, iid: int, label: str) -> None:
        self.forge.store.update(iid, labels=[*self.provider.get(iid).labels, label])

    def approve(self, iid: int, user: str) -> None:
        self.provider.approve(iid, user)

    def merge(self, iid: int, sha: str | None) -> None:
        self.provider.merge(iid, "alice", sha=sha)

    def export(self, ref: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", ref], cwd=self.remote, check=True,
                                 capture_output=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)


def make_standin(tmp: Path, **options: Any) -> StandIn:
    standin = StandIn(tmp, **options).start()
    standin.repo.commit_actions("main", None, [{"action": "create", "file_path": "README.md",
                                                "content": README}], "Initial commit\n")
    return standin


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    server = make_standin(tmp_path, per_page=2)  # small pages: every list paginates
    yield server
    server.stop()


# Every GitLab profile of the stand-in (edition x merge API era), then the local provider.
HARNESSES = [f"gitlab-{name}" for name in PROFILES] + ["local"]


@pytest.fixture(params=HARNESSES)
def make_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Build a harness of the parametrized provider kind, with provider options."""
    servers: list[StandIn] = []

    def build(**options: Any) -> Harness:
        if request.param.startswith("gitlab-"):
            servers.append(make_standin(tmp_path, per_page=2,
                                        profile=request.param.removeprefix("gitlab-")))
            return GitLabHarness(servers[-1], tmp_path, **options)
        return LocalHarness(tmp_path, **options)

    yield build
    for server in servers:
        server.stop()


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    return make_harness()  # type: ignore[no-any-return]


def bot_notes(harness: Harness, iid: int, slug: str) -> list[str]:
    return [body for body in harness.notes(iid) if note_slug(body) == slug]
