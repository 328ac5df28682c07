"""The pure right-sizing rules: each proposal needs its evidence, and only that."""

from __future__ import annotations

import math

from promoter.core import rightsize

RULES = rightsize.Rules(mig_profiles=("1g.10gb", "2g.20gb", "3g.40gb"))


def _evidence(**changes: object) -> rightsize.Evidence:
    values = {"days": 14.0, "util_p95": 50.0, "util_sum_p95": 50.0, "memory_peak_mib": 60_000.0,
              "memory_sum_peak_mib": 60_000.0, "gpu_memory_mib": 81_500.0,
              "quiet_hour_rate": 30.0, "average_replicas": 2.0}
    values.update(changes)
    return rightsize.Evidence(**values)  # type: ignore[arg-type]


def test_small_memory_and_low_utilisation_get_the_smallest_fitting_slice() -> None:
    current = rightsize.Current(min_replicas=1, gpus=1, mig=None, capacity=10)
    found = rightsize.propose(current, _evidence(util_p95=8, memory_peak_mib=8_000), RULES)
    assert [(p.kind, p.proposed) for p in found] == [("mig", "1g.10gb")]
    # 8,000 MiB + 20% = 9,600 fits 10gb; at 9,000 MiB (10,800) it needs the 20gb slice.
    found = rightsize.propose(current, _evidence(util_p95=8, memory_peak_mib=9_000), RULES)
    assert [(p.kind, p.proposed) for p in found] == [("mig", "2g.20gb")]
    assert math.isclose(found[0].gpu_hours_saved_month, 2 * (1 - 2 / 7) * 730)


def test_the_smallest_slice_wins_whatever_order_the_profiles_are_listed_in() -> None:
    """Profiles of equal memory: the one with less compute; a 7-slice profile (a whole GPU
    as MIG) saves nothing and is never proposed."""
    current = rightsize.Current(min_replicas=1, gpus=1, mig=None, capacity=10)
    rules = rightsize.Rules(mig_profiles=("2g.10gb", "1g.10gb"))
    found = rightsize.propose(current, _evidence(util_p95=5, memory_peak_mib=6_000), rules)
    assert [(p.kind, p.proposed) for p in found] == [("mig", "1g.10gb")]
    whole = rightsize.Rules(mig_profiles=("4g.40gb", "3g.40gb", "7g.80gb"))
    found = rightsize.propose(current, _evidence(util_p95=45, memory_peak_mib=50_000), whole)
    assert found == []


def test_a_lower_minimum_of_a_mig_deployment_saves_its_slices_not_whole_gpus() -> None:
    current = rightsize.Current(min_replicas=3, gpus=1, mig="1g.10gb", capacity=10)
    found = rightsize.propose(current, _evidence(quiet_hour_rate=1, replica_counts=(3.0,)),
                              RULES)
    assert [(p.kind, p.proposed) for p in found] == [("min-replicas", "1")]
    assert math.isclose(found[0].gpu_hours_saved_month, (3 - 1) * (1 / 7) * 730)
    # Two slices per replica hold 2/7 of a GPU (before: 1/7, the count dropped).
    two = rightsize.Current(min_replicas=3, gpus=2, mig="1g.10gb", capacity=10)
    assert math.isclose(rightsize.gpus_per_replica(two), 2 / 7)
    found = rightsize.propose(two, _evidence(quiet_hour_rate=1, replica_counts=(3.0,)), RULES)
    assert math.isclose(found[0].gpu_hours_saved_month, (3 - 1) * (2 / 7) * 730)


def test_a_slice_is_sized_by_the_memory_it_holds_not_its_rounded_name() -> None:
    """A 1g.10gb slice holds 9.50 GiB on an A100 80GB (nvidia-smi mig -lgip): 8,150 MiB + 20%
    (9,780 MiB) fits "10gb" read as 10,000 MiB, but not the 9,728 MiB the slice has."""
    current = rightsize.Current(min_replicas=1, gpus=1, mig=None, capacity=10)
    assert rightsize.profile_memory_mib("1g.10gb") == 9_728
    found = rightsize.propose(current, _evidence(util_p95=8, memory_peak_mib=8_100), RULES)
    assert [(p.kind, p.proposed) for p in found] == [("mig", "1g.10gb")]   # 9,720 MiB
    found = rightsize.propose(current, _evidence(util_p95=8, memory_peak_mib=8_150), RULES)
    assert [(p.kind, p.proposed) for p in found] == [("mig", "2g.20gb")]


def test_memory_a_server_reserved_up_front_proposes_no_slice_or_fewer_gpus() -> None:
    """vLLM's framebuffer use is its --gpu-memory-utilization share, not its need."""
    quiet = _evidence(util_p95=8, util_sum_p95=16, memory_peak_mib=8_000,
                      memory_sum_peak_mib=16_000, quiet_hour_rate=1)
    for gpus in (1, 2):
        current = rightsize.Current(min_replicas=3, gpus=gpus, mig=None, capacity=10,
                                    memory_is_evidence=False)
        assert [p.kind for p in rightsize.propose(current, quiet, RULES)] == ["min-replicas"]
        trusted = rightsize.Current(min_replicas=3, gpus=gpus, mig=None, capacity=10)
        assert len(rightsize.propose(trusted, quiet, RULES)) == 2


def test_a_lower_minimum_saves_only_the_hours_spent_at_the_minimum() -> None:
    """Above its minimum the autoscaler runs what the load needs with either minimum."""
    current = rightsize.Current(min_replicas=3, gpus=2, mig=None, capacity=10)
    full = {"memory_peak_mib": 80_000, "memory_sum_peak_mib": 160_000}  # only replicas shrink
    busy = _evidence(quiet_hour_rate=1, replica_counts=(3.0, 3.0, 5.0, 8.0), **full)
    found = rightsize.propose(current, busy, RULES)
    assert [(p.kind, p.proposed) for p in found] == [("min-replicas", "1")]
    assert math.isclose(found[0].gpu_hours_saved_month, (3 - 1) * 2 * 730 * 0.5)
    assert "at the minimum 50% of the time" in found[0].evidence
    always = rightsize.propose(current, _evidence(quiet_hour_rate=1,
                                                  replica_counts=(3.0, 2.5, 3.0), **full), RULES)
    assert math.isclose(always[0].gpu_hours_saved_month, (3 - 1) * 2 * 730)


def test_no_proposal_without_enough_evidence_or_without_offered_profiles() -> None:
    current = rightsize.Current(min_replicas=4, gpus=1, mig=None, capacity=10)
    quiet = _evidence(util_p95=5, memory_peak_mib=1_000, quiet_hour_rate=1)
    assert rightsize.propose(current, _evidence(days=3, util_p95=5, quiet_hour_rate=1),
                             RULES) == []
    kinds = [p.kind for p in rightsize.propose(current, quiet, rightsize.Rules())]
    assert kinds == ["min-replicas"]


def test_busy_gpus_stay_as_they_are() -> None:
    current = rightsize.Current(min_replicas=1, gpus=4, mig=None, capacity=10)
    assert rightsize.propose(current, _evidence(util_sum_p95=250, memory_sum_peak_mib=200_000),
                             RULES) == []
    # Same memory, idle compute: 4 -> 2 GPUs (an even split for tensor parallelism).
    found = rightsize.propose(current, _evidence(util_sum_p95=100, memory_sum_peak_mib=100_000),
                              RULES)
    assert [(p.kind, p.current, p.proposed) for p in found] == [("gpus", "4", "2")]


def _gpus(*gpus: tuple[int, int, float, float, float], per_replica: int = 1
          ) -> rightsize.Evidence:
    """Evidence from GPUs, each reporting (from, to, utilisation %, used MiB, free MiB)
    at every timestamp in [from, to)."""
    def series(column: int) -> list[dict[float, float]]:
        return [{float(t): gpu[column] for t in range(gpu[0], gpu[1])} for gpu in gpus]

    return rightsize.evidence_from(util=series(2), memory_used=series(3),
                                   memory_free=series(4), gpus=per_replica, days=14,
                                   rates_by_hour=[])


def test_a_pod_replaced_within_the_window_counts_only_while_it_ran() -> None:
    """A rollout halfway: pod a reports for the first half, pod b for the second. One replica
    was alive throughout; summing by sample position would have doubled its replica count."""
    rolled = _gpus((0, 50, 40.0, 30_000.0, 50_000.0), (50, 100, 40.0, 30_000.0, 50_000.0))
    assert rolled.util_sum_p95 == 40.0 and rolled.memory_sum_peak_mib == 30_000.0
    assert rolled.average_replicas == 1.0 and rolled.gpu_memory_mib == 80_000.0
    # Two replicas side by side all along: twice the GPUs, the same per-replica sums.
    both = _gpus((0, 100, 40.0, 30_000.0, 50_000.0), (0, 100, 40.0, 30_000.0, 50_000.0))
    assert both.util_sum_p95 == 40.0 and both.average_replicas == 2.0


def test_a_replica_over_two_gpus_sums_its_gpus() -> None:
    found = _gpus((0, 10, 30.0, 10_000.0, 70_000.0), (0, 10, 20.0, 12_000.0, 68_000.0),
                  per_replica=2)
    assert found.util_sum_p95 == 50.0 and found.memory_sum_peak_mib == 22_000.0
    assert found.average_replicas == 1.0 and found.memory_peak_mib == 12_000.0


def test_the_peak_of_unequal_replicas_is_the_largest_ones_not_their_average() -> None:
    """Two replicas over 2 GPUs each, one holding 2 x 35,000 MiB, the other 2 x 10,000: one
    81,500 MiB GPU cannot hold the first (84,000 MiB with headroom), whatever the average."""
    gpu = [{float(t): used for t in range(100)} for used in (35_000.0, 35_000.0,
                                                             10_000.0, 10_000.0)]
    util = [{float(t): 10.0 for t in range(100)} for _ in range(4)]
    free = [{float(t): 81_500.0 - 35_000.0 for t in range(100)} for _ in range(4)]
    found = rightsize.evidence_from(util=util, memory_used=gpu, memory_free=free, gpus=2,
                                    days=14, rates_by_hour=[], pods=["a", "a", "b", "b"])
    assert found.memory_sum_peak_mib == 70_000.0 and found.average_replicas == 2.0
    current = rightsize.Current(min_replicas=2, gpus=2, mig=None, capacity=10)
    assert [p.kind for p in rightsize.propose(current, found, RULES) if p.kind == "gpus"] == []


def test_a_mig_deployment_without_utilisation_still_gets_a_lower_minimum() -> None:
    """DCGM exports no GPU_UTIL for a MIG instance: its replicas are counted from framebuffer
    use, and the quietest hour lowers the minimum; a slice or GPU count, sized from
    utilisation, is not proposed without it."""
    memory = [{float(t): 4_000.0 for t in range(100)} for _ in range(2)]
    free = [{float(t): 5_700.0 for t in range(100)} for _ in range(2)]
    found = rightsize.evidence_from(util=[{}, {}], memory_used=memory, memory_free=free,
                                    gpus=1, days=14, rates_by_hour=[[0.5, 0.8]],
                                    pods=["a", "b"])
    assert math.isnan(found.util_p95) and found.replica_counts == (2.0,) * 100
    current = rightsize.Current(min_replicas=2, gpus=1, mig="1g.10gb", capacity=10)
    assert [(p.kind, p.proposed) for p in rightsize.propose(current, found, RULES)] == [
        ("min-replicas", "1")]
    two = rightsize.Current(min_replicas=1, gpus=2, mig="1g.10gb", capacity=10)
    assert rightsize.propose(two, found, RULES) == []


# A MIG deployment's utilisation is its instances' DCGM_FI_PROF_GR_ENGINE_ACTIVE x 100: a share
# of the instance's compute. (current profile, utilisation % of the instance, peak MiB) ->
# the profile proposed, if any. Scaled to a GPU by g/7 and held to the same 70% ceiling.
MIG_CASES = [
    ("3g.40gb", 10.0, 6_000.0, "1g.10gb"),    # 4.3% of a GPU: fits 1/7 at 70% (10%)
    ("3g.40gb", 30.0, 6_000.0, "2g.20gb"),    # 12.9% of a GPU: above 10%, fits 2/7 (20%)
    ("3g.40gb", 30.0, 12_000.0, "2g.20gb"),   # 14,400 MiB with headroom: not 1g.10gb
    ("3g.40gb", 80.0, 6_000.0, None),         # 34% of a GPU: needs its 3 slices
    ("2g.20gb", 20.0, 20_000.0, None),        # memory: 24,000 MiB fits no smaller profile
    ("1g.10gb", 5.0, 1_000.0, None),          # nothing smaller to offer
]


def test_a_mig_slice_shrinks_by_its_utilisation_scaled_to_a_gpu() -> None:
    for profile, util, peak, expected in MIG_CASES:
        current = rightsize.Current(min_replicas=1, gpus=1, mig=profile, capacity=10)
        evidence = _evidence(util_p95=util, memory_peak_mib=peak,
                             util_metrics=("DCGM_FI_PROF_GR_ENGINE_ACTIVE",))
        found = rightsize.propose(current, evidence, RULES)
        assert [(p.kind, p.current, p.proposed) for p in found] == (
            [("mig", profile, expected)] if expected else []), (profile, util, peak)
        if expected:
            saved = 2 * (rightsize.gpu_share(profile) - rightsize.gpu_share(expected)) * 730
            assert math.isclose(found[0].gpu_hours_saved_month, saved)
            assert f"of its {profile} instance" in found[0].evidence
            assert "(DCGM_FI_PROF_GR_ENGINE_ACTIVE x 100)" in found[0].evidence


def test_fewer_mig_instances_per_replica_save_their_slices() -> None:
    """Two 1g.10gb instances per replica at 20% and 3,000 MiB each: one holds both."""
    current = rightsize.Current(min_replicas=1, gpus=2, mig="1g.10gb", capacity=10)
    evidence = _evidence(util_p95=20, util_sum_p95=40, memory_peak_mib=3_000,
                         memory_sum_peak_mib=6_000, gpu_memory_mib=9_700,
                         util_metrics=("DCGM_FI_PROF_GR_ENGINE_ACTIVE",))
    found = rightsize.propose(current, evidence, RULES)
    assert [(p.kind, p.current, p.proposed) for p in found] == [("gpus", "2", "1")]
    assert math.isclose(found[0].gpu_hours_saved_month, 2 * 1 * (1 / 7) * 730)
    assert "2 1g.10gb instances" in found[0].evidence
    # Busy instances stay: 2 x 50% does not fit one at 70%.
    busy = _evidence(util_p95=50, util_sum_p95=100, memory_peak_mib=3_000,
                     memory_sum_peak_mib=6_000, gpu_memory_mib=9_700)
    assert rightsize.propose(current, busy, RULES) == []


def test_a_mig_deployment_without_utilisation_sizes_replicas_only() -> None:
    current = rightsize.Current(min_replicas=3, gpus=1, mig="3g.40gb", capacity=10)
    found = rightsize.propose(current, _evidence(util_p95=math.nan, util_sum_p95=math.nan,
                                                 memory_peak_mib=1_000, quiet_hour_rate=1,
                                                 util_metrics=()), RULES)
    assert [p.kind for p in found] == ["min-replicas"]
