"""Which DCGM metric stands for a device's utilisation, device by device. Pure.

``DCGM_FI_DEV_GPU_UTIL`` (%) is what right-sizing was built on, but DCGM exports none for a
MIG instance: NVIDIA's answer is the profiling metric ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``, the
ratio (0..1) of time the graphics/compute engine was busy (dcgm-exporter issues #216 and #430,
NVIDIA/DCGM#80). dcgm-exporter's default-counters.csv lists it since 4.0.0 (commit 5f9250c),
dcp-metrics-included.csv before that, and renders a MIG instance's series with
``GPU_I_PROFILE`` and ``GPU_I_ID`` labels. Its value is relative to the instance's own engines:
a busy 1g.10gb instance reads 1.0, a 2g or 3g one reaches 1.0 only when all its engines are
busy (NVIDIA/DCGM#138), so it is a share of the slice, not of the GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"

Key = TypeVar("Key")


@dataclass(frozen=True)
class Chosen:
    series: tuple[dict[float, float], ...]   # per device, % of that device (GPU or instance)
    metrics: tuple[str, ...]                 # the metrics they came from, GPU_UTIL first


def choose(keys: Sequence[Key], gpu_util: Mapping[Key, Mapping[float, float]],
           engine_active: Mapping[Key, Mapping[float, float]],
           mig_instances: set[Key] | frozenset[Key] = frozenset()) -> Chosen:
    """One utilisation series per device in ``keys``: its GPU_UTIL where it has samples, else
    its GR_ENGINE_ACTIVE x 100, else none (an empty series).

    One metric per device, never both: a GPU reporting both would count twice in a replica's
    sum. GPU_UTIL wins on a whole GPU (the metric the rules' ceiling was set against); on a
    MIG instance (``mig_instances``) it is never evidence: NVIDIA does not support it there,
    and dcgm-exporter 3.3.0 exported it as 0 for every instance (issue #216), which would read
    as an idle slice.
    """
    series: list[dict[float, float]] = []
    used: set[str] = set()
    for key in keys:
        util = gpu_util.get(key) or {}
        if util and key not in mig_instances:
            series.append(dict(util))
            used.add(GPU_UTIL)
        elif engine_active.get(key):
            series.append({stamp: ratio * 100 for stamp, ratio in engine_active[key].items()})
            used.add(GR_ENGINE_ACTIVE)
        else:
            series.append({})
    return Chosen(tuple(series), tuple(m for m in (GPU_UTIL, GR_ENGINE_ACTIVE) if m in used))


def describe(metrics: Sequence[str]) -> str:
    """How a report names where its utilisation came from."""
    return " and ".join(f"{m} x 100" if m == GR_ENGINE_ACTIVE else m for m in metrics) \
        or "none"
