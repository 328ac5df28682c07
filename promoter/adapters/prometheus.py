"""Prometheus' HTTP API (``/api/v1/query_range``) over httpx, errors in the project's terms.

Prometheus answers at most 11,000 points per series and query, so a long range is read in
chunks that each stay under that limit.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from promoter.errors import TransientError, UserError
from promoter.ports.metrics import Series

MAX_POINTS = 10_000          # Prometheus refuses more than 11,000 points per series


class PrometheusSource:
    def __init__(self, url: str, *, timeout_seconds: float = 30,
                 client: httpx.Client | None = None) -> None:
        self._url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_seconds)

    def query_range(self, query: str, start: datetime, end: datetime,
                    step_seconds: int) -> list[Series]:
        if step_seconds <= 0 or end <= start:
            raise UserError(f"empty query range {start} .. {end} (step {step_seconds}s)")
        merged: dict[tuple[tuple[str, str], ...], list[tuple[datetime, float]]] = {}
        chunk = timedelta(seconds=step_seconds * MAX_POINTS)
        chunks = math.ceil((end - start) / chunk)
        for index in range(chunks):   # bounded: the range is cut into a known number of pieces
            first = start + index * chunk
            last = min(end, first + chunk - timedelta(seconds=step_seconds))
            if last < first:
                break
            for labels, points in self._one(query, first, last, step_seconds):
                merged.setdefault(labels, []).extend(points)
        return [Series(dict(labels), tuple(points)) for labels, points in sorted(merged.items())]

    def _one(self, query: str, start: datetime, end: datetime,
             step: int) -> list[tuple[tuple[tuple[str, str], ...], list[tuple[datetime, float]]]]:
        params = {"query": query, "start": f"{start.timestamp():.3f}",
                  "end": f"{end.timestamp():.3f}", "step": str(step)}
        try:
            response = self._client.get(f"{self._url}/api/v1/query_range", params=params)
        except httpx.HTTPError as exc:
            raise TransientError(f"Prometheus at {self._url} did not answer: "
                                 f"{type(exc).__name__}",
                                 hint="check prometheus.url in promoter.yaml") from None
        body = _json(response)
        if response.status_code >= 500:
            raise TransientError(f"Prometheus at {self._url} failed ({response.status_code}): "
                                 f"{body.get('error', '')}"[:300])
        if response.status_code != 200 or body.get("status") != "success":
            raise UserError(f"Prometheus refused the query {query!r:.200}: "
                            f"{body.get('errorType', response.status_code)}: "
                            f"{body.get('error', '')}"[:500],
                            hint="check the runtime's telemetry PromQL in its runtime.yaml")
        data = body.get("data") or {}
        if data.get("resultType") != "matrix":
            raise UserError(f"Prometheus answered {data.get('resultType')!r}, not a range matrix")
        results = []
        for item in data.get("result") or []:
            labels = tuple(sorted((str(k), str(v)) for k, v in (item.get("metric") or {}).items()))
            points = [(datetime.fromtimestamp(float(stamp), tz=UTC), float(value))
                      for stamp, value in item.get("values") or []]
            results.append((labels, points))
        return results


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return body if isinstance(body, dict) else {}
