"""Right-sizing from GPU telemetry: smaller resources only where the evidence holds. Pure.

Evidence is what NVIDIA's DCGM exporter and the server report over a window: utilisation per
device (``DCGM_FI_DEV_GPU_UTIL``, %, or where a device has none, as a MIG instance never does,
``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` x 100: see core/utilisation.py), framebuffer used and free
(``DCGM_FI_DEV_FB_USED`` / ``DCGM_FI_DEV_FB_FREE``, MiB) per device, and the request rate. A
device is a whole GPU or, for a MIG deployment, its instance. Three proposals, each with its
numbers and an estimated monthly saving:

- fewer minimum replicas, when the quietest hour needs fewer than ``minReplicas``;
- a MIG profile instead of a whole GPU, or a smaller one instead of the current one, when peak
  memory with headroom fits a profile the environment's nodes offer and utilisation fits its
  share of the compute (g of 7 slices);
- fewer GPUs (or MIG instances) per replica, when peak memory and summed utilisation fit on
  fewer.

Too little evidence (a short window, no samples) proposes nothing; without utilisation from
either metric only the minimum replicas are sized.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from promoter.core import utilisation

HOURS_PER_MONTH = 730
MIG_SLICES = 7
MIG_PROFILE = re.compile(r"^(?P<g>[1-9][0-9]?)g\.(?P<gb>[1-9][0-9]{0,3})gb$")
# A profile's name rounds its memory up: `nvidia-smi mig -lgip` lists 4.75 GiB for the A100
# 40GB's 1g.5gb, 9.50 GiB for the A100 80GB's 1g.10gb, 9.75-39.50 GiB for the H100 80GB's
# 1g.10gb-3g.40gb. Reading "10gb" as 0.95 GiB per named GB (the lowest of those) never
# proposes a slice that holds less memory than the model needs.
MIB_PER_NAMED_GB = 0.95 * 1024


@dataclass(frozen=True)
class Evidence:
    days: float                        # days the samples cover (days_with_samples)
    util_p95: float                    # % per device (a whole GPU, or a MIG instance: % of
                                       # the instance), 95th percentile over all devices and
                                       # samples (NaN: none reported)
    util_sum_p95: float                # % summed over one replica's devices, 95th percentile
    memory_peak_mib: float             # highest framebuffer used on one GPU
    memory_sum_peak_mib: float         # highest framebuffer used summed over a replica's GPUs
    gpu_memory_mib: float | None       # one GPU's framebuffer (used + free), when reported
    quiet_hour_rate: float             # request rate of the quietest hour (its 95th percentile)
    average_replicas: float
    # Replicas alive at each sample (GPU-reporting pods): how long the deployment sat at its
    # minimum, the only time a lower minimum saves anything. Empty: unknown.
    replica_counts: tuple[float, ...] = ()
    # The metrics the utilisation came from (core.utilisation): named in every proposal.
    util_metrics: tuple[str, ...] = (utilisation.GPU_UTIL,)

    def share_at_most(self, replicas: int) -> float:
        """The share of samples with at most ``replicas`` alive (1.0 when unknown)."""
        if not self.replica_counts:
            return 1.0
        return sum(1 for n in self.replica_counts if n <= replicas + 1e-9) / \
            len(self.replica_counts)


@dataclass(frozen=True)
class Current:
    min_replicas: int
    gpus: int
    mig: str | None
    capacity: float                    # requests/s one replica serves
    # False for a server that reserves a fixed share of GPU memory up front (vLLM's
    # --gpu-memory-utilization): the framebuffer it uses then says nothing about what it needs,
    # so no MIG slice or GPU count is proposed from it.
    memory_is_evidence: bool = True


@dataclass(frozen=True)
class Rules:
    headroom: float = 0.2              # memory kept free above the peak
    util_ceiling: float = 70.0         # % a right-sized GPU (or slice) may run at, p95
    min_days: float = 7.0              # fewer days of samples than this propose nothing
    mig_profiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Proposal:
    kind: str                          # min-replicas | mig | gpus
    field: str                         # the intent field it changes
    current: str
    proposed: str
    evidence: str
    gpu_hours_saved_month: float


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def days_with_samples(stamps: Iterable[float], step_seconds: int) -> float:
    """The days of evidence in samples at ``stamps`` (epoch seconds) taken every
    ``step_seconds``: each distinct step that holds a sample counts one step.

    Not the span from the first sample to the last: two hours of samples eight days apart
    (an exporter outage, a long scale-to-zero between them) are two hours of evidence."""
    return len({math.floor(stamp / step_seconds) for stamp in stamps}) * step_seconds / 86400


def quiet_hour_rate(rates_by_hour: Sequence[Sequence[float]]) -> float:
    """The 95th percentile rate of the quietest hour (hours given as their samples)."""
    peaks = [percentile(hour, 0.95) for hour in rates_by_hour if hour]
    return min(peaks) if peaks else math.nan


def _parsed(profile: str) -> re.Match[str]:
    match = MIG_PROFILE.fullmatch(profile)
    if match is None:
        raise ValueError(f"{profile!r} is not a MIG profile <g>g.<memory>gb")
    return match


def profile_memory_mib(profile: str) -> float:
    return int(_parsed(profile)["gb"]) * MIB_PER_NAMED_GB


def profile_slices(profile: str) -> int:
    """The compute slices (of MIG_SLICES) a MIG profile takes: the ``g`` of ``<g>g.<mem>gb``."""
    return int(_parsed(profile)["g"])


def gpu_share(mig_profile: str | None) -> float:
    """The share of one GPU a MIG instance of ``mig_profile`` is (1.0 without a profile)."""
    return profile_slices(mig_profile) / MIG_SLICES if mig_profile else 1.0


def gpus_held(count: int, mig_profile: str | None) -> float:
    """Whole GPUs that ``count`` devices hold: a MIG slice its share of one (g of 7), so
    GPU-hours and their cost read the same in `rightsize`, `forecast` and `cost`."""
    return count * gpu_share(mig_profile)


def gpus_per_replica(current: Current) -> float:
    """Whole GPUs one replica holds: each of its MIG slices is its share of one."""
    return gpus_held(max(current.gpus, 1), current.mig)


def propose(current: Current, evidence: Evidence, rules: Rules) -> list[Proposal]:
    # Utilisation gates only what is sized from it (a slice, a GPU count): a deployment
    # without it (no GPU_UTIL, and no profiling metric exported either) still has a quietest
    # hour that says how many replicas it needs.
    if evidence.days < rules.min_days:
        return []
    found: list[Proposal] = []
    if not math.isnan(evidence.quiet_hour_rate):
        needed = max(1, math.ceil(evidence.quiet_hour_rate / current.capacity - 1e-9))
        if needed < current.min_replicas:
            # Above its minimum the autoscaler runs what the load needs either way: a lower
            # minimum saves only the hours spent at the minimum.
            at_minimum = evidence.share_at_most(current.min_replicas)
            saved = (current.min_replicas - needed) * gpus_per_replica(current) \
                * HOURS_PER_MONTH * at_minimum
            found.append(Proposal(
                "min-replicas", "spec.scaling.minReplicas", str(current.min_replicas),
                str(needed),
                f"quietest hour p95 {evidence.quiet_hour_rate:.1f} req/s over "
                f"{evidence.days:.1f} days of samples needs {needed} replica(s) at "
                f"{current.capacity:g} req/s each; at the minimum {at_minimum:.0%} of the time",
                saved))
    if not current.memory_is_evidence or math.isnan(evidence.util_p95):
        return found
    memory_needed = evidence.memory_peak_mib * (1 + rules.headroom)
    share_now = gpu_share(current.mig)
    # Utilisation is a share of the device it was measured on: on a MIG instance the
    # profiling metric counts the instance's own engines, so g of 7 scales it to a GPU's.
    util_of_gpu = evidence.util_p95 * share_now
    source = utilisation.describe(evidence.util_metrics)
    if current.gpus == 1:
        # The smallest slice that fits: least memory, then least compute. Only fewer slices
        # than the replica holds now save anything; a whole-GPU profile (7 slices) would only
        # move the pod onto MIG nodes.
        candidates = sorted((profile for profile in rules.mig_profiles
                             if profile_slices(profile) < MIG_SLICES * share_now - 1e-9),
                            key=lambda profile: (profile_memory_mib(profile),
                                                 profile_slices(profile)))
        for profile in candidates:
            slices = profile_slices(profile)
            share = slices / MIG_SLICES
            if (memory_needed <= profile_memory_mib(profile)
                    and util_of_gpu <= rules.util_ceiling * share):
                found.append(Proposal(
                    "mig", "spec.resources.gpu.mig", current.mig or "whole GPU", profile,
                    f"peak memory {evidence.memory_peak_mib:,.0f} MiB (+{rules.headroom:.0%} "
                    f"headroom) fits {profile}; {_utilisation_text(current, evidence)} "
                    f"fits {slices}/{MIG_SLICES} of the compute at {rules.util_ceiling:.0f}% "
                    f"({source})",
                    evidence.average_replicas * (share_now - share) * HOURS_PER_MONTH))
                break
    if current.gpus > 1 and evidence.gpu_memory_mib:
        # A MIG deployment's devices are its instances: their memory (used + free) and
        # utilisation are the instance's, so the same rule sizes their count.
        device = f"{current.mig} instances" if current.mig else "GPUs"
        total_needed = evidence.memory_sum_peak_mib * (1 + rules.headroom)
        for fewer in range(1, current.gpus):
            if (total_needed <= fewer * evidence.gpu_memory_mib
                    and evidence.util_sum_p95 <= fewer * rules.util_ceiling
                    and current.gpus % fewer == 0):   # tensor parallelism splits evenly
                found.append(Proposal(
                    "gpus", "spec.resources.gpu.count", str(current.gpus), str(fewer),
                    f"peak memory {evidence.memory_sum_peak_mib:,.0f} MiB over the replica's "
                    f"{current.gpus} {device} (+{rules.headroom:.0%}) fits {fewer} x "
                    f"{evidence.gpu_memory_mib:,.0f} MiB; summed utilisation p95 "
                    f"{evidence.util_sum_p95:.0f}% fits {fewer} {device} at "
                    f"{rules.util_ceiling:.0f}% ({source})",
                    evidence.average_replicas * (current.gpus - fewer) * share_now
                    * HOURS_PER_MONTH))
                break
    return found


def _utilisation_text(current: Current, evidence: Evidence) -> str:
    if current.mig is None:
        return f"GPU utilisation p95 {evidence.util_p95:.0f}%"
    return (f"utilisation p95 {evidence.util_p95:.0f}% of its {current.mig} instance "
            f"({evidence.util_p95 * gpu_share(current.mig):.1f}% of a GPU)")


def evidence_from(*, util: Sequence[Mapping[float, float]],
                  memory_used: Sequence[Mapping[float, float]],
                  memory_free: Sequence[Mapping[float, float]], gpus: int, days: float,
                  rates_by_hour: Sequence[Sequence[float]],
                  pods: Sequence[str] | None = None,
                  util_metrics: tuple[str, ...] = (utilisation.GPU_UTIL,)) -> Evidence:
    """Evidence from per-GPU series, each ``{timestamp: value}``; ``pods`` names each series'
    pod (its replica), when known.

    Sums are taken per timestamp over each replica's GPUs: per pod when the pods are known
    (the peak is then the largest replica's, not the average of unequal ones), else over the
    GPUs that reported then divided by the replicas alive then (reporting GPUs / GPUs per
    replica). Either way a pod replaced during the window (a rollout, an eviction) counts only
    while it ran, instead of adding its samples to its successor's."""
    flat_util = [v for series in util for v in series.values()]
    per_replica = max(gpus, 1)
    summed_util, _ = _per_replica_sums(util, per_replica, pods)
    # Replicas alive are counted from framebuffer use, which every GPU and MIG instance
    # reports; a device with no utilisation from either metric would count as none.
    summed_memory, alive = _per_replica_sums(memory_used, per_replica, pods)
    memory_peaks = [max(series.values()) for series in memory_used if series]
    totals = [used + free[stamp] for used_series, free in zip(memory_used, memory_free,
                                                             strict=False)
              for stamp, used in used_series.items() if stamp in free]
    return Evidence(
        days=days, util_p95=percentile(flat_util, 0.95),
        util_sum_p95=percentile(summed_util, 0.95),
        memory_peak_mib=max(memory_peaks) if memory_peaks else math.inf,
        memory_sum_peak_mib=max(summed_memory) if summed_memory else math.inf,
        gpu_memory_mib=statistics.median(totals) if totals else None,
        quiet_hour_rate=quiet_hour_rate(rates_by_hour),
        average_replicas=statistics.fmean(alive) if alive else 0.0,
        replica_counts=tuple(alive), util_metrics=util_metrics)


def _per_replica_sums(series: Sequence[Mapping[float, float]], per_replica: int,
                      pods: Sequence[str] | None = None) -> tuple[list[float], list[float]]:
    """Replica sums and, per timestamp, the replicas alive then. With ``pods``: one sum per
    pod and timestamp. Without: at each timestamp the sum over the GPUs reporting then per
    replica alive then (an average when replicas differ)."""
    if pods is not None:
        per_pod: dict[float, dict[str, float]] = {}
        for one, pod in zip(series, pods, strict=True):
            for stamp, value in one.items():
                sums_then = per_pod.setdefault(stamp, {})
                sums_then[pod] = sums_then.get(pod, 0.0) + value
        stamps = sorted(per_pod)
        return ([total for stamp in stamps for total in per_pod[stamp].values()],
                [float(len(per_pod[stamp])) for stamp in stamps])
    by_stamp: dict[float, list[float]] = {}
    for one in series:
        for stamp, value in one.items():
            by_stamp.setdefault(stamp, []).append(value)
    sums, alive = [], []
    for stamp in sorted(by_stamp):
        values = by_stamp[stamp]
        replicas = len(values) / per_replica
        sums.append(sum(values) / max(replicas, 1.0))
        alive.append(replicas)
    return sums, alive
