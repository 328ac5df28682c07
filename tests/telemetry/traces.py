"""Synthetic but realistic request traces for the telemetry tests and the scaling backtest.

Request rate (requests/s) every 5 minutes, shaped in a local time zone: a working-day curve with
a morning and an afternoon peak, quiet nights, weekends at a third of a weekday, multiplicative
noise, short bursts the calendar does not predict, and a public holiday (a weekday that looks
like a Sunday). Seeded, so every run sees the same numbers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

STEP = timedelta(minutes=5)
TZ_NAME = "Europe/Berlin"
# Four whole local weeks, Monday to Monday (no daylight-saving change inside).
START = datetime(2026, 11, 2, tzinfo=ZoneInfo(TZ_NAME))
HOLIDAY = datetime(2026, 11, 18).date()     # a Wednesday in the second week (Buß- und Bettag)


@dataclass(frozen=True)
class Trace:
    times: list[datetime]          # aware, UTC
    rate: list[float]              # requests/s
    waiting: list[float]           # queued requests (vLLM's num_requests_waiting)


def _weekday_shape(hour: float) -> float:
    """Relative load over a working day: night 0.1, peaks at 10:30 and 15:00."""
    morning = math.exp(-((hour - 10.5) ** 2) / (2 * 1.6 ** 2))
    afternoon = 0.85 * math.exp(-((hour - 15.0) ** 2) / (2 * 2.0 ** 2))
    return 0.1 + morning + afternoon


def generate(weeks: float = 4, *, peak: float = 60.0, seed: int = 7, holiday: bool = True,
             bursts_per_week: int = 4) -> Trace:
    rng = random.Random(seed)
    count = int(weeks * timedelta(days=7) / STEP)
    burst_steps: dict[int, float] = {}
    for _ in range(round(bursts_per_week * weeks)):
        first, length = rng.randrange(count), rng.randrange(3, 7)
        for index in range(first, min(count, first + length)):
            burst_steps[index] = 1.0 + rng.uniform(0.3, 0.6)
    times, rate, waiting = [], [], []
    for index in range(count):
        local = START + index * STEP
        hour = local.hour + local.minute / 60
        weekend = local.weekday() >= 5 or (holiday and local.date() == HOLIDAY)
        level = _weekday_shape(hour) * (0.33 if weekend else 1.0)
        value = peak * level / 1.2 * rng.lognormvariate(0, 0.08) * burst_steps.get(index, 1.0)
        times.append(local.astimezone(UTC))
        rate.append(value)
        waiting.append(max(0.0, value - 0.8 * peak) / 4)
    return Trace(times, rate, waiting)


def openmetrics(trace: Trace, *, namespace: str, pod: str, gpu_util: float | None = None,
                fb_used_mib: float | None = None) -> str:
    """The trace as an OpenMetrics text file for ``promtool tsdb create-blocks-from``.

    The request counter accumulates the rate; DCGM gauges are written when given.
    """
    labels = f'namespace="{namespace}",pod="{pod}"'
    lines = []
    total = 0.0
    for moment, value in zip(trace.times, trace.rate, strict=True):
        total += value * STEP.total_seconds()
        lines.append(f"vllm:request_success_total{{{labels}}} {total:.3f} "
                     f"{int(moment.timestamp())}")
    for moment, value in zip(trace.times, trace.waiting, strict=True):
        lines.append(f"vllm:num_requests_waiting{{{labels}}} {value:.3f} "
                     f"{int(moment.timestamp())}")
    if gpu_util is not None and fb_used_mib is not None:
        for moment in trace.times:
            stamp = int(moment.timestamp())
            lines.append(f'DCGM_FI_DEV_GPU_UTIL{{{labels},gpu="0"}} {gpu_util} {stamp}')
            lines.append(f'DCGM_FI_DEV_FB_USED{{{labels},gpu="0"}} {fb_used_mib} {stamp}')
    return "\n".join(_by_family(lines)) + "\n# EOF\n"


def _by_family(lines: list[str]) -> list[str]:
    # OpenMetrics wants each family's samples together and in time order: they already are.
    return lines
