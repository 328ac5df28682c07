"""Scaling backtest: four weeks of synthetic traffic, train on three, replay the fourth.

The trace is tests.telemetry.traces (daily + weekly seasonality, noise, unforecast bursts, a
holiday in the training weeks). A minute-by-minute simulator of replica counts with a cold-start
delay (a new pod serves only COLD_START minutes after it is asked for) compares:

- static peak: enough replicas for the training weeks' peak, all week;
- reactive: HPA-style, desired = ceil(rate seen LAG minutes ago / capacity), scale-down after
  a stabilization window (what KEDA's prometheus trigger alone does);
- promoter: the ScaledObject `promoter forecast` renders: cron pre-warm windows from the
  seasonal forecast (opening COLD_START early) and the same reactive trigger; KEDA takes the
  higher of the two.

Prints GPU-hours and minutes under-provisioned (demand above what Ready pods serve) for each.
Goal: >= 30% fewer GPU-hours than static peak, no more under-provisioned minutes than reactive.
Not a test: it prints figures, it does not judge them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promoter.core import forecast, prewarm
from tests.telemetry import traces

CAPACITY = 8.0            # requests/s one replica serves
GPUS_PER_REPLICA = 1
COLD_START = 10           # minutes from scale-up to Ready (vLLM telemetry.startupSeconds: 600)
LAG = 2                   # minutes of metric delay (scrape + rate window + HPA sync)
STABILIZE = 10            # minutes before a scale-down takes effect (the ScaledObject's 600 s)
MIN_REPLICAS, MAX_REPLICAS = 1, 16


def minute_rates(trace: traces.Trace, start: int, stop: int) -> list[float]:
    """The 5-minute trace held per minute over steps [start, stop)."""
    per_step = int(traces.STEP.total_seconds() // 60)
    return [trace.rate[index] for index in range(start, stop) for _ in range(per_step)]


def simulate(demand: list[float], desired: Callable[[int, list[float]], int]) -> tuple[float, int]:
    """(GPU-hours, minutes under-provisioned) of a policy that sets desired replicas each minute.

    Pods are started at once and are Ready COLD_START minutes later; scale-downs wait
    STABILIZE minutes (the highest desired count in that window wins) and drop the youngest
    pods first. Every pod that exists, Ready or not, holds its GPUs.
    """
    pods = [-COLD_START] * MIN_REPLICAS  # minute each pod was started; the minimum is warm
    recent: list[int] = []
    gpu_minutes, short = 0, 0
    for minute, rate in enumerate(demand):
        wanted = max(MIN_REPLICAS, min(MAX_REPLICAS, desired(minute, demand)))
        recent = [*recent[-(STABILIZE - 1):], wanted]
        target = max(recent) if wanted < len(pods) else wanted
        while len(pods) < target:
            pods.append(minute)
        while len(pods) > target:
            pods.pop()
        ready = sum(1 for started in pods if minute - started >= COLD_START)
        gpu_minutes += len(pods) * GPUS_PER_REPLICA
        if rate > ready * CAPACITY + 1e-9:
            short += 1
    return gpu_minutes / 60, short


def reactive(minute: int, demand: list[float]) -> int:
    seen = demand[max(0, minute - LAG)]
    return math.ceil(seen / CAPACITY - 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seed", nargs="?", type=int, default=7,
                        help="seed of the synthetic trace (default 7)")
    seed = parser.parse_args().seed
    clock = time.perf_counter()
    trace = traces.generate(weeks=4, seed=seed)
    tz = ZoneInfo(traces.TZ_NAME)
    week_steps = int(timedelta(weeks=1) / traces.STEP)
    train_steps = 3 * week_steps
    per_bucket = 3                                   # 15-minute averages, as Prometheus gives
    history = [(trace.times[i], sum(trace.rate[i:i + per_bucket]) / per_bucket)
               for i in range(0, train_steps, per_bucket)]
    fitted = forecast.fit(history, tz, step_minutes=15)
    bounds = prewarm.Bounds(MIN_REPLICAS, MAX_REPLICAS, CAPACITY)
    windows = prewarm.windows(prewarm.hourly_replicas(fitted, bounds), MIN_REPLICAS, COLD_START)
    demand = minute_rates(trace, train_steps, 4 * week_steps)
    test_start = trace.times[train_steps]
    local_minute = [forecast.bucket_of(test_start + timedelta(minutes=m), tz, 1)
                    for m in range(len(demand))]

    static_replicas = math.ceil(max(trace.rate[:train_steps]) / CAPACITY)

    def promoter(minute: int, seen: list[float]) -> int:
        return max(prewarm.scheduled(windows, MIN_REPLICAS, local_minute[minute]),
                   reactive(minute, seen))

    # Static peak starts warm (its pods exist before the week begins).
    static_hours = static_replicas * GPUS_PER_REPLICA * len(demand) / 60
    static_short = sum(1 for rate in demand if rate > static_replicas * CAPACITY)
    results = {"static peak": (static_hours, static_short),
               "reactive (HPA-style)": simulate(demand, reactive),
               "promoter forecast + pre-warm + reactive": simulate(demand, promoter)}
    held_out = [(trace.times[i], sum(trace.rate[i:i + per_bucket]) / per_bucket)
                for i in range(train_steps, 4 * week_steps, per_bucket)]
    error = forecast.wape([v for _, v in held_out],
                          forecast.predict(fitted, [m for m, _ in held_out], tz))
    print(f"trace: 4 weeks (seed {seed}), {traces.TZ_NAME}; train 3, test week 4; "
          f"capacity {CAPACITY:g} req/s/replica; cold start {COLD_START} min; "
          f"metric lag {LAG} min; "
          f"{len(windows)} pre-warm windows; held-out forecast WAPE {error:.1%}")
    print(f"{'strategy':<42} {'GPU-hours':>10} {'vs static':>10} {'min under':>10}")
    for name, (hours, short) in results.items():
        print(f"{name:<42} {hours:>10.1f} {1 - hours / static_hours:>10.1%} {short:>10d}")
    promo, react = results["promoter forecast + pre-warm + reactive"], results[
        "reactive (HPA-style)"]
    print(f"goal: >=30% fewer GPU-hours than static: {1 - promo[0] / static_hours:.1%}; "
          f"under-provisioned minutes {promo[1]} vs reactive {react[1]}")
    print(f"({time.perf_counter() - clock:.1f} s)")


if __name__ == "__main__":
    main()
