"""Prometheus metrics for ``GET /metrics``.

Each ``Metrics`` owns its own ``CollectorRegistry`` (several apps can live in one process, as in
tests). Jobs by state and queue depth are read from the queue at scrape time, so they are
always the durable truth rather than a counter that drifts after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STATES = ("queued", "running", "retrying", "done", "dead")
WAITING_STATES = ("queued", "retrying")
_log = logging.getLogger("promoter.metrics")


class _CountsCollector(Collector):
    """Gauges built on each scrape from counts read from the state (``counts``; ``what`` names
    them in the warning when they cannot be read: a scrape must not fail because the state is
    briefly down)."""

    def __init__(self, what: str, counts: Callable[[], Mapping[str, int]],
                 families: Callable[[Mapping[str, int]], Iterator[Metric]]) -> None:
        self._what, self._counts, self._families = what, counts, families

    def collect(self) -> Iterator[Metric]:
        try:
            counts = dict(self._counts())
        except Exception as exc:
            _log.warning("%s unavailable for /metrics: %s", self._what, type(exc).__name__)
            return
        yield from self._families(counts)


def _queue_families(counts: Mapping[str, int]) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("promoter_jobs", "Jobs in the durable queue by state",
                             labels=["state"])
    for state in sorted(set(JOB_STATES) | set(counts)):
        jobs.add_metric([state], counts.get(state, 0))
    yield jobs
    yield GaugeMetricFamily("promoter_queue_depth", "Jobs waiting to run (queued + retrying)",
                            value=sum(counts.get(s, 0) for s in WAITING_STATES))


def _kept_deliveries_families(counts: Mapping[str, int]) -> Iterator[Metric]:
    """GitLab deliveries kept to be handled again (state.failed_deliveries): ``parked`` above
    0 wants an operator (GitLab's hook failed every time it was handled, for ~34 hours)."""
    kept = GaugeMetricFamily(
        "promoter_gitlab_deliveries_kept", "GitLab hook deliveries that failed while acted on, "
        "kept to be handled again (waiting) or given up on after every try (parked)",
        labels=["state"])
    for state in ("waiting", "parked"):
        kept.add_metric([state], counts.get(state, 0))
    yield kept


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "promoter_webhook_deliveries", "Webhook deliveries by source and outcome",
            ["source", "outcome"], registry=self.registry)
        self.ack_seconds = Histogram(
            "promoter_webhook_ack_seconds", "Time from request to acknowledgement",
            ["source"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.step_seconds = Histogram(
            "promoter_job_step_duration_seconds", "Duration of one pipeline step of a job",
            ["step", "outcome"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.reconcile_enqueued = Counter(
            "promoter_reconcile_enqueued", "Jobs the reconcile loop found missing",
            registry=self.registry)
        self.mr_sweep_recorded = Counter(
            "promoter_mr_sweep_recorded", "Merge request outcomes (merge, close) the reconcile "
            "loop recorded because their webhook never arrived", ["action"],
            registry=self.registry)
        self.reconcile_leader = Gauge(
            "promoter_reconcile_leader", "1 while this process runs the reconcile loop (with "
            "PostgreSQL state, one replica at a time), else 0", registry=self.registry)
        self._queue_collector: _CountsCollector | None = None

    def watch_queue(self, counts: Callable[[], Mapping[str, int]]) -> None:
        if self._queue_collector is None:
            self._queue_collector = _CountsCollector("queue counts", counts, _queue_families)
            self.registry.register(self._queue_collector)

    def watch_kept_deliveries(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """``promoter_gitlab_deliveries_kept{state}`` from ``counts`` ({waiting, parked})."""
        self.registry.register(_CountsCollector("kept deliveries", counts,
                                                _kept_deliveries_families))

    def delivery(self, source: str, outcome: str) -> None:
        self.deliveries.labels(source=source, outcome=outcome).inc()

    def step(self, step: str, outcome: str, seconds: float) -> None:
        self.step_seconds.labels(step=step, outcome=outcome).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
