"""`promoter rightsize` across a dcgm-exporter restart, against a real Prometheus with
promtool-backfilled DCGM exporter series.

One Triton replica on one whole A100 80GB, eight days. For the first five the GPU is reported
by the exporter at 10.0.0.1 (driver 535) at 40,000 MiB used and 30% busy; then the exporter
restarts on 10.0.0.9 after a driver upgrade (550), which gives every sample of the same GPU a
new ``instance`` and ``DCGM_FI_DRIVER_VERSION``: the last three days read 3,000 MiB and 5%.
The pod, its GPU and its load are the same all along: one device, two series.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from promoter import forecasting, rightsizing
from promoter.adapters.prometheus import PrometheusSource
from promoter.settings import load_settings
from tests.telemetry import traces
from tests.telemetry.prometheus_server import available, prometheus
from tests.telemetry.rightsize_cli import intent_yaml, write_config

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(available() is not None, reason=available() or "")]

NAMESPACE = "models-production"
POD = "restarted-6b8d4f9c7-ax7k2"
FB_TOTAL = 81_500.0
END = traces.START + timedelta(days=8)
RESTART = traces.START + timedelta(days=5)
# (instance, driver, framebuffer used MiB, GPU_UTIL %) before and after the restart
EXPORTERS = (("10.0.0.1:9400", "535.129.03", 40_000.0, 30.0),
             ("10.0.0.9:9400", "550.54.15", 3_000.0, 5.0))


def _history() -> str:
    families: dict[str, list[str]] = {"req": [], "util": [], "used": [], "free": []}
    trace = traces.generate(weeks=8 / 7, peak=2.0, seed=9)
    pod = f'namespace="{NAMESPACE}",pod="{POD}"'
    total = 0.0
    for moment, rate in zip(trace.times, trace.rate, strict=True):
        total += rate * 300
        families["req"].append(f"nv_inference_request_success{{{pod}}} {total:.1f} "
                               f"{int(moment.timestamp())}")
    # Each family's samples series by series, each in time order: the earlier exporter's
    # series, then the later one's.
    for instance, driver, used, util in EXPORTERS:
        g = (f'gpu="0",UUID="GPU-5d1c",device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",'
             f'Hostname="gpu-node-1",instance="{instance}",DCGM_FI_DRIVER_VERSION="{driver}",'
             f'container="server",{pod}')
        after_restart = instance == EXPORTERS[1][0]
        for moment in trace.times:
            if (moment >= RESTART) != after_restart:
                continue
            stamp = int(moment.timestamp())
            families["used"].append(f"DCGM_FI_DEV_FB_USED{{{g}}} {used:.0f} {stamp}")
            families["free"].append(f"DCGM_FI_DEV_FB_FREE{{{g}}} {FB_TOTAL - used:.0f} {stamp}")
            families["util"].append(f"DCGM_FI_DEV_GPU_UTIL{{{g}}} {util:.1f} {stamp}")
    lines = [line for family in families.values() for line in family]
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory):
    with prometheus(_history(), tmp_path_factory.mktemp("prometheus-dcgm-restart")) as url:
        yield url


def test_the_days_before_an_exporter_restart_stay_evidence(tmp_path: Path,
                                                           prometheus_url: str) -> None:
    """Before, the GPU's series were keyed by (pod, gpu, MIG instance) and the later one
    replaced the earlier: the report counted 8 days of evidence but took its peak memory
    (3,000 MiB) and utilisation (5%) from the last three, and proposed a 1g.10gb slice for a
    model that had used 40,000 MiB (+20% headroom: more than even 3g.40gb holds)."""
    settings = load_settings(write_config(tmp_path, prometheus_url, NAMESPACE), environ={})
    intent = intent_yaml("restarted", team="vision", runtime="triton",
                         gpu="{count: 1, type: NVIDIA-A100-SXM4-80GB}", min_replicas=1,
                         max_replicas=3)
    deployment, target = forecasting.resolve(settings, YAML(typ="safe").load(intent),
                                             "production", "intent")
    report = rightsizing.report(settings, deployment, target, PrometheusSource(prometheus_url),
                                now=END, days=8, claimed={})
    assert report.evidence.days >= 7.9
    assert report.evidence.memory_peak_mib == 40_000.0
    # Five days of eight at 30%: the p95 is the earlier exporter's reading.
    assert report.evidence.util_p95 == pytest.approx(30.0)
    # One device all along, never two replicas (the series are one GPU, not two).
    assert max(report.evidence.replica_counts) == 1.0
    assert report.evidence.gpu_memory_mib == FB_TOTAL
    assert report.proposals == ()


def test_a_gpu_is_charged_once_across_an_exporter_restart(tmp_path: Path,
                                                          prometheus_url: str) -> None:
    """For the lookback after the restart the old series (10.0.0.1) still answers beside the
    new one (10.0.0.9); counted per series, 48 hours around the restart charged about 48.3
    GPU-hours for one GPU. Counted per device, exactly 48."""
    settings = load_settings(write_config(tmp_path, prometheus_url, NAMESPACE), environ={})
    rows = rightsizing.cost(settings, PrometheusSource(prometheus_url), by="model",
                            start=RESTART - timedelta(hours=24),
                            end=RESTART + timedelta(hours=24))
    assert {row.key: round(row.gpu_hours, 6) for row in rows} == {"restarted": 48.0}
