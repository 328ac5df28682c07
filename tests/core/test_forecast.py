"""The pure forecast and pre-warm plan: windows, lead time, cron in the local week."""

from __future__ import annotations

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


def test_a_flat_week_needs_no_window() -> None:
    assert prewarm.windows(_plan({}), 1, 10) == []
    assert prewarm.gpu_hours([], 2, 4) == 2 * 4 * 168


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
