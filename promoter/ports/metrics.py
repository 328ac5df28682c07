"""The telemetry port: range queries over a Prometheus-compatible HTTP API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    points: tuple[tuple[datetime, float], ...]     # aware UTC datetimes, in time order


class MetricsSource(Protocol):
    def query_range(self, query: str, start: datetime, end: datetime,
                    step_seconds: int) -> list[Series]:
        """Every series ``query`` returns between ``start`` and ``end`` at ``step_seconds``."""
