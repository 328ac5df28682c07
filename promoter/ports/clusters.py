"""The cluster-status port: Argo CD ``Application`` objects, listed and watched.

Implemented by ``promoter.adapters.argocd`` (the kubernetes client); ``promoter status`` asks
the composition root for one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from promoter.errors import TransientError


class WatchExpired(TransientError):
    """The resourceVersion to watch from is too old (410 Gone): list again."""


class ApplicationSource(Protocol):
    def list(self, labels: Mapping[str, str | None]) -> tuple[list[dict[str, Any]], str | None]:
        """The matching Applications and the list's resourceVersion (to watch from)."""

    def watch(self, labels: Mapping[str, str | None], resource_version: str | None,
              seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(ADDED|MODIFIED|DELETED, Application) until the server ends the watch."""
