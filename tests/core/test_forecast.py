"""The pure forecast and pre-warm plan: windows, lead time, cron in the local week."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from promoter.core import forecast, prewarm
from promoter.errors import UserError

BERLIN = ZoneInfo("Europe/Berlin")


def _plan(busy: dict[int, int], base: int = 1) -> list[int]:
    return [busy.get(hour, base) for hour in range(prewarm.HOURS)]


def test_a_rise_opens_its_window_one_lead_time_early() -> None:
    # Monday 09:00-12:00 at 4 replicas, 3 in the hour after.
    windows = prewarm.windows(_plan({9: 4, 10: 4, 11: 4, 12: 3}), 1, 25)
    assert [(w.days, w.start_minute, w.duration_minutes, w.replicas) for w in windows] == [
        ((0,), 9 * 60 - 25, 3 * 60 + 25, 4), ((0,), 12 * 60 - 25, 60 + 25, 3)]
    trigger = prewarm.cron_trigger(windows[0], "Europe/Berlin")["metadata"]
    assert trigger == {"timezone": "Europe/Berlin", "start": "35 8 * * 1",
                       "end": "0 12 * * 1", "desiredReplicas": "4"}
    assert prewarm.scheduled(windows, 1, 8 * 60 + 34) == 1
    assert prewarm.scheduled(windows, 1, 8 * 60 + 35) == 4
    assert prewarm.scheduled(windows, 1, 12 * 60 + 30) == 3


def test_same_window_on_several_days_is_one_trigger_and_midnight_wraps() -> None:
    busy = {day * 24 + 10: 5 for day in range(5)}
    busy[6 * 24 + 23] = 2                                  # Sunday 23:00 -> Monday 00:00
    windows = prewarm.windows(_plan(busy), 1, 30)
    weekday = next(w for w in windows if w.replicas == 5)
    assert weekday.days == (0, 1, 2, 3, 4)
    assert prewarm.cron_trigger(weekday, "UTC")["metadata"]["start"] == "30 9 * * 1,2,3,4,5"
    late = next(w for w in windows if w.replicas == 2)
    meta = prewarm.cron_trigger(late, "UTC")["metadata"]
    assert (meta["start"], meta["end"]) == ("30 22 * * 0", "0 0 * * 1")   # Sunday -> Monday


def _cron_minutes(expression: str) -> list[int]:
    """Minutes of the (Monday-first) week a promoter cron expression fires at."""
    minute, hour, _, _, days = expression.split()
    return sorted((int(day) - 1) % 7 * 1440 + int(hour) * 60 + int(minute)
                  for day in days.split(","))


def _next(fires: list[int], now: int) -> int:
    """robfig/cron's Next: the first firing strictly after ``now`` (cyclic over the week)."""
    return min(f if f > now else f + prewarm.WEEK_MINUTES for f in fires)


def _keda_replicas(triggers: list[dict], min_replicas: int, now: int) -> int:
    """KEDA's cron scaler (pkg/scalers/cron_scaler.go, IsActive): a trigger is active while
    its next end comes before its next start; KEDA holds the highest active trigger."""
    held = [min_replicas]
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["start"] != meta["end"], "KEDA refuses a cron trigger whose start is its end"
        start, end = _next(_cron_minutes(meta["start"]), now), _next(
            _cron_minutes(meta["end"]), now)
        if end < start:
            held.append(int(meta["desiredReplicas"]))
    return max(held)


def _each_fifth_minute() -> range:
    return range(0, prewarm.WEEK_MINUTES, 5)


@pytest.mark.parametrize(("busy", "base", "lead"), [
    ({10: 1}, 3, 60),              # 167 busy hours + one hour's lead: exactly a week
    ({10: 1}, 3, 90),              # ... and beyond a week
    ({10: 1, 50: 5}, 3, 60),       # all week at 3, and a burst of 5 on top
    ({**{h: 3 for h in range(8, 31)}, **{h: 3 for h in range(32, 55)}}, 1, 90),  # 1-hour dip
    ({day * 24 + h: 4 for day in range(5) for h in range(8, 18)}, 1, 10),          # office
])
def test_what_promoter_counts_is_what_keda_holds(busy: dict[int, int], base: int,
                                                  lead: int) -> None:
    """scheduled/covers/gpu_hours agree with KEDA's cron semantics at every minute, also when
    a run plus its lead reaches a week or a dip is shorter than the lead."""
    windows = prewarm.windows(_plan(busy, base=base), 1, lead)
    triggers = [prewarm.cron_trigger(window, "UTC") for window in windows]
    assert len({t["name"] for t in triggers}) == len(triggers)   # KEDA wants unique names
    for now in _each_fifth_minute():
        assert _keda_replicas(triggers, 1, now) == prewarm.scheduled(windows, 1, now), now
    held = sum(_keda_replicas(triggers, 1, now) for now in range(0, prewarm.WEEK_MINUTES, 15))
    assert prewarm.gpu_hours(windows, 1, 1) == held * 15 / 60


def test_a_run_reaching_a_week_is_held_all_week() -> None:
    windows = prewarm.windows(_plan({10: 1}, base=3), 1, 60)
    assert all(prewarm.scheduled(windows, 1, now) == 3 for now in _each_fifth_minute())
    assert [prewarm.cron_trigger(w, "UTC")["metadata"]["start"] for w in windows] == [
        "0 0 * * 1", "0 12 * * 4"]


def test_a_flat_week_needs_no_window() -> None:
    assert prewarm.windows(_plan({}), 1, 10) == []
    assert prewarm.gpu_hours([], 2, 4) == 2 * 4 * 168


def test_a_flat_week_above_the_minimum_is_held_all_week() -> None:
    """Every hour needs 4 (a quota-capped maxReplicas): with no window the ScaledObject fell
    back to minReplicas, and the MR counted a quarter of the GPU-hours the plan needs."""
    windows = prewarm.windows(_plan({}, base=4), 1, 30)
    assert all(prewarm.scheduled(windows, 1, now) == 4 for now in _each_fifth_minute())
    assert prewarm.gpu_hours(windows, 1, 1) == 4 * 168


def test_replicas_stay_within_bounds() -> None:
    bounds = prewarm.Bounds(2, 6, 10.0)
    assert [prewarm.replicas_for(rate, bounds) for rate in (0, 15, 40, 1000)] == [2, 2, 4, 6]


def _series(days: int, shape) -> list[tuple[datetime, float]]:  # type: ignore[no-untyped-def]
    start = datetime(2026, 11, 2, tzinfo=BERLIN)
    return [(start + timedelta(minutes=15 * i), shape(start + timedelta(minutes=15 * i)))
            for i in range(days * 96)]


def test_the_forecast_follows_the_local_clock_and_outvotes_a_holiday() -> None:
    def shape(moment: datetime) -> float:
        local = moment.astimezone(BERLIN)
        weekend = local.weekday() >= 5 or local.date() == datetime(2026, 11, 11).date()
        return (50.0 if 9 <= local.hour < 17 else 5.0) * (0.2 if weekend else 1.0)

    samples = [(m.astimezone(UTC), v) for m, v in _series(21, shape)]
    fitted = forecast.fit(samples, BERLIN)
    wednesday_10 = 2 * 96 + 10 * 4      # the holiday was a Wednesday in one week of three
    assert fitted.mean[wednesday_10] > 40
    assert fitted.mean[5 * 96 + 10 * 4] < 15          # Saturday stays low
    assert fitted.mean[0 * 96 + 3 * 4] < 8            # Monday 03:00 local, not UTC


def test_too_little_history_is_refused() -> None:
    with pytest.raises(UserError, match="days of request-rate history"):
        forecast.fit(_series(3, lambda _m: 1.0), BERLIN)
    with pytest.raises(UserError, match="no request-rate history"):
        forecast.fit([], BERLIN)


def test_a_week_spanned_by_a_few_samples_is_refused() -> None:
    """Eight samples over seven days span a week but say nothing of its shape: the flat
    forecast they gave read as "1.0 weeks of history" in the MR."""
    start = datetime(2026, 11, 2, tzinfo=UTC)
    sparse = [(start + timedelta(hours=24 * day), 5.0) for day in range(8)]
    with pytest.raises(UserError, match="fills only 1% of the week's 15-minute slots"):
        forecast.fit(sparse, BERLIN)


def _business_hours(nights: list[float]) -> list[tuple[datetime, float]]:
    """Three weeks at 80 req/s ±5% 09:00-17:00 on weekdays; other hours drawn from
    ``nights`` (UTC, Monday 2025-01-06 first)."""
    rng = random.Random(1)
    start = datetime(2025, 1, 6, tzinfo=UTC)
    samples = []
    for step in range(21 * 96):
        moment = start + timedelta(minutes=15 * step)
        busy = moment.weekday() < 5 and 9 <= moment.hour < 17
        samples.append((moment, 80 * rng.uniform(0.95, 1.05) if busy else rng.choice(nights)))
    return samples


MONDAY_NOON = 12 * 4


def test_quiet_hour_noise_does_not_set_the_busy_hours_band() -> None:
    """Nights of 0-0.1 req/s: pooled over every sample, their relative errors (0.05 around a
    forecast of 0.02) made the spread 0.64, and Monday noon at 80 req/s asked for 15
    replicas of 10 req/s. The band is now the daytime noise (±5%)."""
    fitted = forecast.fit(_business_hours([0.0, 0.0, 0.02, 0.05, 0.1]), ZoneInfo("UTC"))
    assert 0 < fitted.relative_spread < 0.05
    assert fitted.upper[MONDAY_NOON] < fitted.mean[MONDAY_NOON] * 1.1
    assert prewarm.hourly_replicas(fitted, prewarm.Bounds(1, 20, 10.0))[12] <= 9


def test_nights_at_zero_leave_the_busy_hours_their_headroom() -> None:
    """Nights at exactly 0 were three quarters of the residuals, each 0: the spread was 0.0
    and the ±5% daytime noise got no headroom at all."""
    fitted = forecast.fit(_business_hours([0.0]), ZoneInfo("UTC"))
    assert fitted.relative_spread > 0.01
    assert fitted.upper[MONDAY_NOON] > fitted.mean[MONDAY_NOON] * 1.01


@pytest.mark.parametrize("level", [0.0, 3.0])
def test_a_flat_or_empty_week_has_no_spread(level: float) -> None:
    fitted = forecast.fit(_series(14, lambda _m: level), BERLIN)
    assert fitted.relative_spread == 0.0
    assert fitted.upper == fitted.mean
