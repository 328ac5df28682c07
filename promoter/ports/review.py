"""Reviewing merge requests of the local git provider (`promoter mr`, the demo's summary).

GitLab MRs are reviewed in GitLab; with the built-in local provider promoter plays the
reviewer itself, through this port (implemented by ``promoter.adapters.localgit``).
"""

from __future__ import annotations

from typing import Protocol

from promoter.ports.git import MergeRequest


class MergeRequestReview(Protocol):
    def list_mrs(self, state: str = "opened") -> list[MergeRequest]: ...

    def get(self, iid: int) -> MergeRequest: ...

    def notes(self, iid: int) -> list[str]: ...

    def diff(self, iid: int) -> str: ...

    def approve(self, iid: int, user: str, sha: str | None = None) -> MergeRequest: ...

    def merge(self, iid: int, user: str, sha: str | None = None) -> MergeRequest: ...

    def close(self, iid: int, user: str) -> MergeRequest: ...
