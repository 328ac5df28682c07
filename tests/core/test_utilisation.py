"""One utilisation metric per device: GPU_UTIL where a whole GPU reports it, else the
profiling metric GR_ENGINE_ACTIVE (a ratio) as %, never both."""

from __future__ import annotations

from promoter.core import utilisation
from promoter.core.utilisation import GPU_UTIL, GR_ENGINE_ACTIVE

WHOLE, SLICE, SILENT = ("p", "0", ""), ("p", "1", "3"), ("p", "2", "")


def test_each_device_takes_one_metric() -> None:
    # (GPU_UTIL samples, GR_ENGINE_ACTIVE samples, MIG instance) -> the series chosen
    cases = [
        ({0.0: 85.0}, {0.0: 0.05}, False, {0.0: 85.0}, (GPU_UTIL,)),     # GPU_UTIL wins
        ({}, {0.0: 0.25}, False, {0.0: 25.0}, (GR_ENGINE_ACTIVE,)),      # profiling only
        # A MIG instance's GPU_UTIL is no evidence (dcgm-exporter 3.3.0 exported it as 0).
        ({0.0: 0.0}, {0.0: 0.4}, True, {0.0: 40.0}, (GR_ENGINE_ACTIVE,)),
        ({0.0: 0.0}, {}, True, {}, ()),
        ({}, {}, False, {}, ()),
    ]
    for util, engine, mig, series, metrics in cases:
        chosen = utilisation.choose([WHOLE], {WHOLE: util}, {WHOLE: engine},
                                    {WHOLE} if mig else set())
        assert chosen.series == (series,) and chosen.metrics == metrics


def test_a_mixed_deployment_names_both_metrics_in_order() -> None:
    chosen = utilisation.choose([WHOLE, SLICE, SILENT], {WHOLE: {0.0: 30.0}},
                                {WHOLE: {0.0: 0.9}, SLICE: {0.0: 0.1}}, {SLICE})
    assert chosen.series == ({0.0: 30.0}, {0.0: 10.0}, {})
    assert chosen.metrics == (GPU_UTIL, GR_ENGINE_ACTIVE)
    assert utilisation.describe(chosen.metrics) == \
        "DCGM_FI_DEV_GPU_UTIL and DCGM_FI_PROF_GR_ENGINE_ACTIVE x 100"
    assert utilisation.describe(()) == "none"
