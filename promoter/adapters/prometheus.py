"""Prometheus' HTTP API (``/api/v1/query_range``) over httpx, errors in the project's terms.

Prometheus answers at most 11,000 points per series and query, so a long range is read in
chunks that each stay under that limit.

An answer with ``warnings`` is refused: Prometheus (over remote read) and Thanos answer 200
"success" with whatever they could read when a store did not answer, and a forecast or a cost
report read from that partial history would be wrong without saying so.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from promoter.core.masking import without_credentials, without_url_credentials
from promoter.errors import TransientError, UserError
from promoter.ports.metrics import Series

MAX_POINTS = 10_000          # Prometheus refuses more than 11,000 points per series
MAX_WARNINGS_QUOTED = 400    # characters of a refused answer's warnings in the error
MAX_ERROR_MASKED = 4_000     # characters of an answer's error read (and masked) at most


class PrometheusSource:
    def __init__(self, url: str, *, timeout_seconds: float = 30,
                 client: httpx.Client | None = None) -> None:
        # The API path goes after the URL's own path, not after its query: prometheus.url may
        # carry a token parameter (``?token=``) that a proxy in front of Prometheus checks,
        # and it must reach every query (httpx's ``params=`` would replace it, so they are merged).
        base = httpx.URL(url)
        self._query_url = base.copy_with(path=base.path.rstrip("/") + "/api/v1/query_range")
        # What every message quotes: prometheus.url may carry a password (``user:pw@``) or a
        # token parameter, which must not reach logs or job reasons.
        self._where = without_url_credentials(url.rstrip("/"))
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
        # partial_response=false: Thanos then fails a query a store cannot answer instead of
        # answering it in part (Prometheus ignores the parameter).
        params = {"query": query, "start": f"{start.timestamp():.3f}",
                  "end": f"{end.timestamp():.3f}", "step": str(step),
                  "partial_response": "false"}
        try:
            response = self._client.get(self._query_url.copy_merge_params(params))
        except httpx.HTTPError as exc:
            raise TransientError(f"Prometheus at {self._where} did not answer: "
                                 f"{type(exc).__name__}",
                                 hint="check prometheus.url in promoter.yaml") from None
        body = _json(response)
        if response.status_code >= 500:
            raise TransientError(f"Prometheus at {self._where} failed ({response.status_code}): "
                                 f"{body.get('error', '')}"[:300])
        if response.status_code != 200 or body.get("status") != "success":
            raise UserError(f"Prometheus refused the query {query!r:.200}: "
                            f"{body.get('errorType', response.status_code)}: "
                            f"{body.get('error', '')}"[:500],
                            hint="check the runtime's telemetry PromQL in its runtime.yaml")
        if body.get("warnings"):
            raise TransientError(_partial_answer(self._where, body["warnings"]),
                                 hint="the data may be incomplete; retry once every store "
                                      "Prometheus reads from answers")
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


def _partial_answer(url: str, warnings: Any) -> str:
    """The refusal of an answer with warnings, quoting them: capped (one can be a long list of
    stores), and without credentials (a remote-read endpoint's userinfo or token). ``url``: as
    it may be quoted (without_url_credentials)."""
    quoted = "; ".join(str(warning) for warning in warnings) \
        if isinstance(warnings, list) else str(warnings)
    quoted = without_credentials(quoted)
    if len(quoted) > MAX_WARNINGS_QUOTED:
        quoted = quoted[:MAX_WARNINGS_QUOTED] + "…"
    return f"Prometheus at {url} answered with warnings, so its data may be partial: {quoted}"


def _json(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON, its ``error`` fit to quote: Thanos (or Prometheus over remote read)
    names the store that failed in it, and a store's URL can carry userinfo or an
    ``access_token=``. Masked here, once, so no message can quote it raw; masked before it is
    cut, so a cut cannot leave half a URL that the masking no longer recognises."""
    try:
        body = response.json()
    except ValueError:
        return {"error": without_credentials(response.text[:MAX_ERROR_MASKED])[:200]}
    if not isinstance(body, dict):
        return {}
    if body.get("error") is not None:
        body["error"] = without_credentials(str(body["error"])[:MAX_ERROR_MASKED])
    return body
