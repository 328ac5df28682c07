"""A week-ahead seasonal forecast of request rate and the replica plan it implies. Pure.

The model is deliberately small: demand on a GPU service repeats by time of day and by day of
week. Samples are placed in buckets of the configured time zone's week (Monday 00:00 = bucket 0);

- the weekly profile is the median of each bucket over the weeks seen (a holiday in one week of
  three is outvoted);
- the daily profile is the median of each time-of-day bucket over all days, scaled by the
  median level of that weekday (so two weeks of history, or gaps, still give a full week);
- the forecast blends the two (weekly where at least two weeks cover a bucket, else daily);
- the upper band adds the residuals' robust spread (MAD, relative to the forecast), which is
  what pre-warming provisions for; measured where capacity is decided, over the buckets whose
  forecast is at least a quarter of the week's peak (BUSY_SHARE), not over quiet hours.

Time zones arrive as a ``tzinfo`` (the caller builds it from an IANA name), so cron windows
follow the wall clock of the configured zone, daylight saving included.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from promoter.errors import UserError

DAYS = 7
MINUTES_PER_DAY = 24 * 60
WEEKLY_WEIGHT = 0.7      # weight of the weekly profile where two or more weeks cover a bucket
MAD_TO_SIGMA = 1.4826    # a normal distribution's sigma from its median absolute deviation
BUSY_SHARE = 0.25        # buckets forecast at this share of the week's peak set the spread


@dataclass(frozen=True)
class Forecast:
    step_minutes: int
    mean: tuple[float, ...]        # expected rate per bucket of the local week
    upper: tuple[float, ...]       # the band pre-warming provisions for
    relative_spread: float         # robust sigma of (actual - forecast) / forecast
    weeks_seen: float              # history length, in weeks

    @property
    def buckets_per_day(self) -> int:
        return MINUTES_PER_DAY // self.step_minutes

    def bucket_of(self, moment: datetime, tz: tzinfo) -> int:
        return bucket_of(moment, tz, self.step_minutes)


def bucket_of(moment: datetime, tz: tzinfo, step_minutes: int) -> int:
    local = moment.astimezone(tz)
    return (local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute) // step_minutes


# Share of the week's slots that must hold samples: a span of a week with a few samples in it
# would otherwise give a flat forecast that reads as "a week of history".
MIN_COVERAGE = 0.5


def fit(samples: Sequence[tuple[datetime, float]], tz: tzinfo, *, step_minutes: int = 15,
        z: float = 1.28) -> Forecast:
    """The seasonal model of ``samples`` (aware datetimes, rate values) in zone ``tz``."""
    if step_minutes <= 0 or MINUTES_PER_DAY % step_minutes:
        raise UserError(f"forecast step {step_minutes} min must divide a day")
    per_day = MINUTES_PER_DAY // step_minutes
    week = per_day * DAYS
    clean = [(moment, value) for moment, value in samples if math.isfinite(value) and value >= 0]
    if not clean:
        raise UserError("no request-rate history to forecast from",
                        hint="check prometheus.url and the runtime's telemetry PromQL")
    first, last = min(m for m, _ in clean), max(m for m, _ in clean)
    weeks_seen = (last - first).total_seconds() / (DAYS * 86400)
    if weeks_seen < 6 / 7:
        raise UserError(f"only {weeks_seen * 7:.1f} days of request-rate history; the weekly "
                        "model needs at least 6 days",
                        hint="wait until Prometheus holds a week, or raise forecast.history_days")
    by_bucket: list[list[float]] = [[] for _ in range(week)]
    by_day: dict[tuple[int, int, int], list[float]] = {}   # local date -> values
    for moment, value in clean:
        local = moment.astimezone(tz)
        bucket = bucket_of(moment, tz, step_minutes)
        by_bucket[bucket].append(value)
        by_day.setdefault((local.year, local.month, local.day), []).append(value)
    covered = sum(1 for values in by_bucket if values) / week
    if covered < MIN_COVERAGE:
        raise UserError(f"the request-rate history fills only {covered:.0%} of the week's "
                        f"{step_minutes}-minute slots; the weekly model needs "
                        f"{MIN_COVERAGE:.0%}",
                        hint="check the scrape interval and gaps in Prometheus's retention")
    # Daily profile: median per time of day over every day; weekday level from day means.
    time_of_day = [statistics.median(v) if v else math.nan for v in (
        [x for day in range(DAYS) for x in by_bucket[day * per_day + slot]]
        for slot in range(per_day))]
    overall = statistics.mean(value for _, value in clean) or 1e-9
    levels: dict[int, list[float]] = {}
    for (year, month, day), values in by_day.items():
        if len(values) >= per_day // 2:   # a partial day's mean says nothing of its level
            levels.setdefault(datetime(year, month, day).weekday(), []).append(
                statistics.mean(values) / overall)
    level = [statistics.median(levels[d]) if d in levels else 1.0 for d in range(DAYS)]
    daily_mean = statistics.mean(v for v in time_of_day if not math.isnan(v)) / overall
    mean: list[float] = []
    for bucket in range(week):
        slot, day = bucket % per_day, bucket // per_day
        shape = time_of_day[slot] if not math.isnan(time_of_day[slot]) else overall
        daily = shape * level[day] / (daily_mean or 1.0)
        seen = by_bucket[bucket]
        if len(seen) >= 2:
            mean.append(WEEKLY_WEIGHT * statistics.median(seen) + (1 - WEEKLY_WEIGHT) * daily)
        else:
            mean.append(daily)
    # The spread is the error relative to the forecast where capacity is decided: over the
    # samples of buckets forecast at BUSY_SHARE of the week's peak or more. Pooled over every
    # sample, the quiet hours (three quarters of a business-hours service's week) set it:
    # their small absolute noise around a mean near 0 is a huge relative error (0.02 around
    # 0.01 req/s), and a band of +80% at the daytime peak asked for twice the replicas; with
    # nights at exactly 0 their zero errors were the median, and the peak got no headroom.
    # Quiet hours are held at minReplicas anyway (and the reactive trigger covers them). A
    # flat or all-zero week keeps every bucket; a busy set without samples (every bucket
    # there filled from the daily profile) falls back to all of them.
    expected = [mean[bucket_of(moment, tz, step_minutes)] for moment, _ in clean]
    floor = BUSY_SHARE * max(mean)
    pairs = [(value, level) for (_, value), level in zip(clean, expected, strict=True)]
    busy = [(value, level) for value, level in pairs if level >= floor] or pairs
    residuals = [(value - level) / max(level, 1e-9) for value, level in busy]
    center = statistics.median(residuals)
    spread = MAD_TO_SIGMA * statistics.median(abs(r - center) for r in residuals)
    upper = tuple(value * (1 + z * spread) for value in mean)
    return Forecast(step_minutes, tuple(mean), upper, spread, weeks_seen)


def predict(forecast: Forecast, moments: Sequence[datetime], tz: tzinfo) -> list[float]:
    return [forecast.mean[forecast.bucket_of(moment, tz)] for moment in moments]


def wape(actual: Sequence[float], predicted: Sequence[float]) -> float:
    """Weighted absolute percentage error: sum |error| / sum actual (0 = perfect)."""
    total = sum(actual)
    if total <= 0:
        raise UserError("no demand in the held-out window to score the forecast against")
    return sum(abs(a - p) for a, p in zip(actual, predicted, strict=True)) / total
