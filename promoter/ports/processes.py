"""Detached background services (the demo's MLflow server, OCI registry and `promoter serve`).

Implemented by ``promoter.adapters.processes``; the demo gets them from the composition root.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class BackgroundService(Protocol):
    def running(self) -> dict[str, object] | None:
        """The service's record (pid, port, url) when it runs and answers its health URL."""

    def start(self, command: Sequence[str], *, port: int, health: str,
              env: Mapping[str, str] | None = None) -> dict[str, object]:
        """Start detached and wait until ``health`` answers; returns the record."""

    def stop(self) -> bool:
        """Stop it; False when it was not running."""
