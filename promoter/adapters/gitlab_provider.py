"""GitLab as the git provider: the shared proposal lifecycle (core.proposal) over
``GitLabForge`` (adapters.gitlab), recording each pushed head for the webhook handler, and its
construction from the settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from promoter.adapters.gitlab import GitLabForge, connect
from promoter.core.proposal import ProposalFlow
from promoter.errors import ConfigError
from promoter.ports.git import MergeRequest, Proposal, ProposalResult, branch_for, texts
from promoter.settings import Settings
from promoter.state.db import StateDB
from promoter.state.pushed_heads import PushedHeads


class GitLabProvider:
    """``GitProvider`` on a GitLab project; records pushed heads for the webhook handler."""

    def __init__(self, forge: GitLabForge, ledger: PushedHeads | None = None, *,
                 supersede: bool = False, attempts: int = 5, backoff_seconds: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.forge = forge
        self._ledger = ledger
        self._flow = ProposalFlow(forge, supersede=supersede, attempts=attempts,
                                  backoff_seconds=backoff_seconds, sleep=sleep,
                                  pushed_head=lambda iid: ledger.pushed_sha(forge.project_id, iid)
                                  if ledger is not None else None)

    def propose(self, proposal: Proposal) -> ProposalResult:
        result = self._flow.propose(proposal)
        if self._ledger:
            self._ledger.record_proposal(self.forge.project_id, proposal, result)
        return result

    def withdraw(self, branch: str, reason: str) -> MergeRequest | None:
        return self._flow.withdraw(branch, reason)

    def get(self, iid: int) -> MergeRequest:
        return self.forge.get_mr(iid)

    def own_username(self) -> str:
        return self.forge.own_username()

    def find(self, name: str, env: str) -> MergeRequest | None:
        found = self.forge.merge_requests(branch_for(name, env))
        return found[0] if found else None

    def open_merge_request(self, branch: str) -> MergeRequest | None:
        return self._flow.open_mr(branch)

    def files(self, prefix: str, ref: str) -> dict[str, str]:
        return texts(self.forge.read_files(ref, [], [prefix]))

    def paths(self, prefix: str, ref: str) -> frozenset[str] | None:
        return self.forge.list_files(ref, prefix)

    def read_many(self, paths: Sequence[str], ref: str) -> dict[str, str]:
        return texts(self.forge.read_files(ref, list(paths), []))

    def read(self, path: str, ref: str) -> str | None:
        return self.read_many([path], ref).get(path)


def from_settings(settings: Settings, *, state: StateDB | None = None) -> GitLabProvider:
    """``state``: the state database (the composition root passes the configured one)."""
    forge = _forge(settings)
    pushes = PushedHeads(state) if state is not None else \
        PushedHeads.in_state_dir(Path(settings.state_dir))
    return GitLabProvider(forge, pushes,
                          supersede=settings.git.newer_version == "supersede")


def reader_from_settings(settings: Settings) -> GitLabProvider:
    """The provider for reading branches only (`policy check`): it records no pushed heads,
    so no state database is opened (or created), and each read is tried once: a command
    run by hand says at once that GitLab cannot be reached instead of retrying for seconds."""
    return GitLabProvider(_forge(settings, attempts=1))


def _forge(settings: Settings, *, attempts: int = 4) -> GitLabForge:
    """ConfigError when git.gitlab or the token is missing (before any request)."""
    gitlab_settings = settings.git.gitlab
    token = settings.secret("PROMOTER_GITLAB_TOKEN")
    if not gitlab_settings.url or not gitlab_settings.project:
        raise ConfigError("the GitLab provider needs git.gitlab.url and git.gitlab.project",
                          hint="set PROMOTER_GITLAB_URL and PROMOTER_GITLAB_PROJECT")
    if token is None or not token.reveal():
        raise ConfigError("PROMOTER_GITLAB_TOKEN is not set", hint="export a GitLab token with "
                          "the api scope (or PROMOTER_GITLAB_TOKEN_FILE naming a file)")
    verify: bool | str = gitlab_settings.verify_tls
    if verify and gitlab_settings.ca_file:
        verify = gitlab_settings.ca_file
    return connect(gitlab_settings.url, token.reveal(), gitlab_settings.project,
                   verify_tls=verify, timeout_seconds=gitlab_settings.timeout_seconds,
                   max_wait_seconds=gitlab_settings.max_retry_wait_seconds, attempts=attempts)
