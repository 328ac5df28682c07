"""The days of right-sizing evidence are the days the GPUs report, not the span of the window
between the first sample and the last (a query source in memory, no Prometheus)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promoter import rightsizing
from promoter.core.intent import resolve_intent
from promoter.ports.metrics import Series
from promoter.settings import Settings

SETTINGS = Settings.model_validate({
    "environments": {"production": {"trigger": {"alias": "production"},
                                    "namespace": "models-production",
                                    "mig_profiles": ["1g.10gb", "3g.40gb"]}},
    "policy": {"teams": {"risk": {}}}})
INTENT = {"apiVersion": "promoter.dev/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "fraud"},
          "spec": {"model": {"name": "Fraud", "version": "3"},
                   "owner": {"team": "risk", "costCenter": "cc"}, "runtime": "triton",
                   "resources": {"cpu": "1", "memory": "1Gi",
                                 "gpu": {"count": 1, "type": "NVIDIA-A100-SXM4-80GB"}},
                   "scaling": {"minReplicas": 3, "maxReplicas": 6}}}
NOW = datetime(2025, 3, 10, tzinfo=UTC)
POD = {"pod": "fraud-5f7c9d-x2k4q", "gpu": "0", "namespace": "models-production"}


class _Idle:
    """One idle whole GPU (5% busy, 3 GB of 80 used) and 0.5 req/s at ``stamps``."""

    def __init__(self, stamps: list[datetime]) -> None:
        self.stamps = stamps

    def query_range(self, query: str, start: datetime, end: datetime,
                    step_seconds: int) -> list[Series]:
        values = {"DCGM_FI_DEV_GPU_UTIL": 5.0, "DCGM_FI_DEV_FB_USED": 3000.0,
                  "DCGM_FI_DEV_FB_FREE": 78000.0}
        metric = next((name for name in values if query.startswith(name)), None)
        if query.startswith("DCGM_FI_PROF"):
            return []
        if metric is None:   # the request rate
            return [Series({}, tuple((moment, 0.5) for moment in self.stamps))]
        return [Series(POD, tuple((moment, values[metric]) for moment in self.stamps))]


def _report(stamps: list[datetime]) -> rightsizing.Report:
    targets = SETTINGS.targets()
    deployment = resolve_intent(targets, INTENT, "production", origin="test")
    return rightsizing.report(SETTINGS, deployment, targets.environment("production"),
                              _Idle(stamps), now=NOW, days=14, claimed={})


def _hour_from(moment: datetime) -> list[datetime]:
    return [moment + timedelta(minutes=5 * step) for step in range(12)]


def test_two_hours_of_samples_eight_days_apart_are_not_eight_days_of_evidence() -> None:
    """Before, the evidence was the span from the first sample to the last: an hour eight
    days ago and the last hour (an exporter outage between them) read as 8 days, and
    minReplicas 3 -> 1 and a 1g.10gb slice were proposed "over 8 days"."""
    report = _report(_hour_from(NOW - timedelta(days=8)) + _hour_from(NOW - timedelta(hours=1)))
    assert report.evidence.days == pytest.approx(2 / 24)
    assert report.proposals == ()


def test_a_week_of_samples_in_a_window_with_a_gap_is_a_week_of_evidence() -> None:
    """Seven days of samples around a day's outage: the seven count, the gap does not."""
    start = NOW - timedelta(days=8)
    stamps = [start + timedelta(minutes=5 * step) for step in range(8 * 288)
              if not timedelta(days=3) <= timedelta(minutes=5 * step) < timedelta(days=4)]
    report = _report(stamps)
    assert report.evidence.days == pytest.approx(7.0)
    assert [p.kind for p in report.proposals] == ["min-replicas", "mig"]
    assert "over 7.0 days of samples" in report.proposals[0].evidence
    assert "Evidence: 7.0 days of DCGM exporter samples" in rightsizing.description(report)


class _Restarted(_Idle):
    """The same GPU as two series: the exporter at 10.0.0.1 until ``restart`` (40,000 MiB
    used), then, restarted on 10.0.0.9, 3,000 MiB."""

    def __init__(self, stamps: list[datetime], restart: datetime) -> None:
        super().__init__(stamps)
        self.restart = restart

    def query_range(self, query: str, start: datetime, end: datetime,
                    step_seconds: int) -> list[Series]:
        if not query.startswith("DCGM_FI_DEV_FB_USED"):
            return super().query_range(query, start, end, step_seconds)
        return [Series({**POD, "instance": instance},
                       tuple((moment, used) for moment in self.stamps if keep(moment)))
                for instance, used, keep in (
                    ("10.0.0.1:9400", 40_000.0, lambda moment: moment < self.restart),
                    ("10.0.0.9:9400", 3_000.0, lambda moment: moment >= self.restart))]


def test_a_gpus_samples_from_before_an_exporter_restart_are_kept() -> None:
    """Before, the later series replaced the earlier one: 14 days of evidence, but the peak
    memory of the last 4 (3,000 MiB), and a 1g.10gb slice for a model that used 40,000."""
    start = NOW - timedelta(days=14)
    stamps = [start + timedelta(minutes=5 * step) for step in range(14 * 288)]
    targets = SETTINGS.targets()
    deployment = resolve_intent(targets, INTENT, "production", origin="test")
    report = rightsizing.report(SETTINGS, deployment, targets.environment("production"),
                                _Restarted(stamps, NOW - timedelta(days=4)), now=NOW, days=14,
                                claimed={})
    assert report.evidence.days == pytest.approx(14.0)
    assert report.evidence.memory_peak_mib == 40_000.0
    assert "mig" not in [p.kind for p in report.proposals]
