"""`promoter rightsize` from the profiling metric DCGM_FI_PROF_GR_ENGINE_ACTIVE, against a real
Prometheus with promtool-backfilled DCGM exporter series.

DCGM exports no DCGM_FI_DEV_GPU_UTIL for a MIG instance (dcgm-exporter issues #216, #430);
NVIDIA points to DCGM_FI_PROF_GR_ENGINE_ACTIVE, a 0..1 ratio, in dcgm-exporter's default
counters since 4.0.0. Series are shaped as dcgm-exporter renders them
(internal/pkg/rendermetrics/render_metrics.go): ``gpu``, ``UUID``, ``device``, ``modelName``,
and on a MIG instance ``GPU_I_PROFILE`` and ``GPU_I_ID``, plus the Kubernetes mapping's
``namespace``/``pod``/``container``. Eight days each:

- ``carved`` (Triton): two replicas, each on a 3g.40gb instance of one A100 80GB (GPU_I_ID 1
  and 2), 6,000 MiB used, the engine 10% busy: framebuffer and profiling metric only.
- ``profiled`` (Triton): one whole GPU whose exporter sends only the profiling metric (8%).
- ``dual`` (Triton): one replica over two whole GPUs reporting both GPU_UTIL (45%) and the
  profiling metric (5%; GPU_UTIL reads any kernel running as busy, so it is the higher).
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from tests.telemetry import traces
from tests.telemetry.prometheus_server import available, prometheus
from tests.telemetry.rightsize_cli import intent_yaml, rightsize_json, write_config

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(available() is not None, reason=available() or "")]

NAMESPACE = "models-production"
GPU = "NVIDIA A100-SXM4-80GB"
FB_TOTAL = 81_500.0
FB_3G = 40_448.0          # a 3g.40gb instance on an A100 80GB: 39.50 GiB (nvidia-smi mig -lgip)
END = traces.START + timedelta(days=8)
# name: (pods, devices per pod, MIG profile, GPU_UTIL %, GR_ENGINE_ACTIVE ratio, used MiB)
FLEET = {"carved": (2, 1, "3g.40gb", None, 0.10, 6_000.0),
         "profiled": (1, 1, None, None, 0.08, 6_500.0),
         "dual": (1, 2, None, 45.0, 0.05, 15_000.0)}


def _intent(name: str) -> str:
    pods, devices, mig, *_rest = FLEET[name]
    gpu = f"{{count: {devices}, type: NVIDIA-A100-SXM4-80GB" + (f", mig: {mig}}}" if mig
                                                                 else "}")
    # minReplicas 1: the replicas run above it, so only the GPU sizing can propose anything.
    return intent_yaml(name, team="vision", runtime="triton", gpu=gpu, min_replicas=1,
                       max_replicas=pods + 2)


def _history() -> str:
    rng = random.Random(11)
    families: dict[str, list[str]] = {"req": [], "util": [], "engine": [], "used": [],
                                      "free": []}
    trace = traces.generate(weeks=8 / 7, peak=2.0, seed=5)
    for number, (name, (pods, devices, mig, util, engine, used)) in enumerate(FLEET.items()):
        for index in range(pods):
            pod = f"{name}-6b8d4f9c7-{'ab'[index]}x7k2"
            labels = f'namespace="{NAMESPACE}",pod="{pod}"'
            total = 0.0
            for moment, rate in zip(trace.times, trace.rate, strict=True):
                stamp = int(moment.timestamp())
                total += rate / pods * 300
                families["req"].append(f"nv_inference_request_success{{{labels}}} {total:.1f} "
                                       f"{stamp}")
                for device in range(devices):
                    # Two instances of one GPU differ only by GPU_I_ID.
                    gpu = number * 2 + (0 if mig else index * devices + device)
                    g = (f'gpu="{gpu}",UUID="GPU-{number:04d}{gpu:04d}",device="nvidia{gpu}",'
                         f'modelName="{GPU}",Hostname="gpu-node-{number}",container="server",'
                         f"{labels}")
                    if mig:
                        g += f',GPU_I_PROFILE="{mig}",GPU_I_ID="{index + 1}"'
                    m = used + rng.uniform(-200, 200)
                    families["used"].append(f"DCGM_FI_DEV_FB_USED{{{g}}} {m:.0f} {stamp}")
                    families["free"].append(f"DCGM_FI_DEV_FB_FREE{{{g}}} "
                                            f"{(FB_3G if mig else FB_TOTAL) - m:.0f} {stamp}")
                    if util is not None:
                        u = max(0.0, min(100.0, util + rng.gauss(0, 2)))
                        families["util"].append(f"DCGM_FI_DEV_GPU_UTIL{{{g}}} {u:.1f} {stamp}")
                    e = max(0.0, min(1.0, engine + rng.gauss(0, 0.01)))
                    families["engine"].append(f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{g}}} {e:.4f} "
                                              f"{stamp}")
    lines = [line for family in families.values() for line in family]
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory):
    with prometheus(_history(), tmp_path_factory.mktemp("prometheus-dcgm-prof")) as url:
        yield url


def _rightsize(run_cli, tmp_path: Path, url: str, name: str) -> dict:
    (tmp_path / f"{name}.yaml").write_text(_intent(name), encoding="utf-8")
    return rightsize_json(run_cli, write_config(tmp_path, url, NAMESPACE),
                          tmp_path / f"{name}.yaml", END)


def test_a_mig_deployment_gets_a_smaller_slice_from_the_profiling_metric(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    """Before, a MIG instance had no utilisation (no GPU_UTIL), so no profile was ever proposed
    for it: this deployment got nothing. Its engine at 10% of a 3g.40gb instance is 4.3% of a
    GPU, within 1g's 1/7 at 70% (10%), and 6,000 MiB + 20% fits 1g.10gb's 9,728 MiB."""
    result = _rightsize(run_cli, tmp_path, prometheus_url, "carved")
    assert [(p["kind"], p["current"], p["proposed"]) for p in result["proposals"]] == [
        ("mig", "3g.40gb", "1g.10gb")]
    [proposal] = result["proposals"]
    # Two replicas all along, each giving back 2 of its 3 slices.
    assert proposal["gpu_hours_saved_month"] == pytest.approx(2 * 2 / 7 * 730, abs=0.1)
    assert "of its 3g.40gb instance" in proposal["evidence"]
    assert "DCGM_FI_PROF_GR_ENGINE_ACTIVE x 100" in proposal["evidence"]
    assert result["utilisation"]["metrics"] == ["DCGM_FI_PROF_GR_ENGINE_ACTIVE"]
    assert 10 <= result["utilisation"]["p95"] <= 13          # % of the instance
    assert result["notes"] and "utilisation from DCGM_FI_PROF_GR_ENGINE_ACTIVE x 100" in \
        result["notes"][0]


def test_a_gpu_exporting_only_the_profiling_metric_is_sized_from_it(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    result = _rightsize(run_cli, tmp_path, prometheus_url, "profiled")
    assert [(p["kind"], p["current"], p["proposed"]) for p in result["proposals"]] == [
        ("mig", "whole GPU", "1g.10gb")]
    assert result["utilisation"]["metrics"] == ["DCGM_FI_PROF_GR_ENGINE_ACTIVE"]


def test_gpu_util_wins_on_a_gpu_reporting_both(run_cli, tmp_path: Path,
                                              prometheus_url: str) -> None:
    """Two GPUs at 45% GPU_UTIL sum to ~90%: more than one GPU's 70%, so both stay. Read from
    the profiling metric (2 x 5%) one GPU would do, and both metrics added up would read
    ~100%: the evidence is GPU_UTIL's alone."""
    result = _rightsize(run_cli, tmp_path, prometheus_url, "dual")
    assert result["proposals"] == []
    assert result["utilisation"]["metrics"] == ["DCGM_FI_DEV_GPU_UTIL"]
    assert 45 <= result["utilisation"]["p95"] <= 50
    assert 88 <= result["utilisation"]["sum_p95"] <= 96
    assert result["notes"] == []
