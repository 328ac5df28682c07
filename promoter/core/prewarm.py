"""From a week's forecast to a KEDA ScaledObject: pre-warm windows plus a reactive trigger. Pure.

Replicas per hour of the local week are the forecast's upper band over one replica's capacity,
bounded by the intent's min/max (max already capped by the team GPU quota by the caller). Each
run of hours above the minimum becomes a cron window that starts one cold-start lead time before
the rise, so the pods are Ready when the load arrives; identical windows on several weekdays
share one trigger. KEDA scales to the highest of its triggers, so a Prometheus trigger on the
live request rate covers whatever the forecast missed.

KEDA's cron scaler is active while the next ``end`` comes before the next ``start`` and refuses
a trigger whose start equals its end. So the windows of one trigger must not overlap each other
(an overlap makes the next start come first: the whole window reads inactive), and no window
can last a week (its end would wrap onto its start). A run that, with its lead, reaches a week
is held all week by two half-week windows that meet (``held_all_week``); promoter's ``covers`` and
``gpu_hours`` then count exactly what KEDA holds. (Not minReplicaCount: every promotion resets
it to the intent's minReplicas, keda_overlay.bounded, and the level would silently go.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promoter.core.forecast import DAYS, MINUTES_PER_DAY, Forecast

HOURS = DAYS * 24
WEEK_MINUTES = DAYS * MINUTES_PER_DAY
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Bounds:
    min_replicas: int
    max_replicas: int
    capacity: float            # requests/s one replica serves at its target


@dataclass(frozen=True)
class Window:
    """Replicas held from ``start`` to ``end`` (local minute of day) on the given weekdays."""

    days: tuple[int, ...]      # 0 = Monday, as datetime.weekday()
    start_minute: int          # local minute of the day the window opens (lead time applied)
    duration_minutes: int      # under a week
    replicas: int
    name: str | None = None    # the trigger's name; None: from the days and start

    def overlaps(self, day: int) -> bool:
        """Whether this window, opened on ``day`` too, would overlap one of its own days."""
        return any(min((day - other) % DAYS, (other - day) % DAYS) * MINUTES_PER_DAY
                   < self.duration_minutes for other in self.days)

    def covers(self, minute_of_week: int) -> bool:
        for day in self.days:
            start = (day * MINUTES_PER_DAY + self.start_minute) % WEEK_MINUTES
            if (minute_of_week - start) % WEEK_MINUTES < self.duration_minutes:
                return True
        return False


def hourly_replicas(forecast: Forecast, bounds: Bounds) -> list[int]:
    """Replicas for each hour of the local week: the busiest bucket of the hour decides."""
    per_hour = 60 // forecast.step_minutes if forecast.step_minutes <= 60 else 1
    plan = []
    for hour in range(HOURS):
        first = hour * 60 // forecast.step_minutes
        peak = max(forecast.upper[first:first + max(per_hour, 1)])
        plan.append(replicas_for(peak, bounds))
    return plan


def replicas_for(rate: float, bounds: Bounds) -> int:
    wanted = math.ceil(rate / bounds.capacity - 1e-9) if rate > 0 else 0
    return max(bounds.min_replicas, min(bounds.max_replicas, wanted))


def windows(plan: Sequence[int], min_replicas: int, lead_minutes: int) -> list[Window]:
    """Runs of hours above the minimum → windows opening ``lead_minutes`` early, grouped by day."""
    if len(plan) != HOURS:
        raise ValueError(f"a weekly plan has {HOURS} hours, not {len(plan)}")
    if lead_minutes < 0 or lead_minutes >= MINUTES_PER_DAY:
        raise ValueError("the lead time must be within a day")
    runs: list[tuple[int, int, int]] = []          # (first hour, hours, replicas)
    starts = [h for h in range(HOURS) if plan[h] != plan[h - 1]]
    if not starts:  # flat all week: minReplicas says it all, or the flat level is held
        return [] if plan[0] <= min_replicas else list(held_all_week(plan[0]))
    for index, first in enumerate(starts):
        end = starts[(index + 1) % len(starts)]
        length = (end - first) % HOURS or HOURS
        if plan[first] > min_replicas:
            runs.append((first, length, plan[first]))
    # A run that with its lead reaches a week: the dip before it is shorter than a cold start,
    # so the replicas would have to start again before they stop. Held all week instead.
    held = [replicas for _, length, replicas in runs
            if length * 60 + lead_minutes >= WEEK_MINUTES]
    all_week = max(held, default=None)
    if all_week is not None:   # lower windows would change nothing
        runs = [run for run in runs if run[2] > all_week]
    grouped: dict[tuple[int, int, int], list[Window]] = {}
    for first, length, replicas in runs:
        start = (first * 60 - lead_minutes) % WEEK_MINUTES
        shape = (start % MINUTES_PER_DAY, length * 60 + lead_minutes, replicas)
        _share(grouped.setdefault(shape, []), start // MINUTES_PER_DAY, *shape)
    found = [window for group in grouped.values() for window in group]
    if all_week is not None:
        found.extend(held_all_week(all_week))
    return sorted(found, key=lambda w: (w.days[0], w.start_minute, w.replicas))


def _share(group: list[Window], day: int, minute: int, duration: int, replicas: int) -> None:
    """Add ``day`` to the first window of one shape (one trigger) it does not overlap: a
    trigger's windows must not overlap each other (KEDA), so an overlapping day opens another."""
    free = next((i for i, window in enumerate(group) if not window.overlaps(day)), None)
    if free is None:
        group.append(Window((day,), minute, duration, replicas))
    else:
        group[free] = Window(tuple(sorted((*group[free].days, day))), minute, duration,
                             replicas)


def held_all_week(replicas: int) -> tuple[Window, Window]:
    """``replicas`` held the whole week as cron windows KEDA accepts: Monday 00:00 to Thursday
    12:00 and Thursday 12:00 to Monday 00:00 (one end is the other's start, so no gap)."""
    half = WEEK_MINUTES // 2
    return (Window((0,), 0, half, replicas, name="prewarm-week-1"),
            Window(((half // MINUTES_PER_DAY) % DAYS,), half % MINUTES_PER_DAY, half, replicas,
                   name="prewarm-week-2"))


def scheduled(windows_: Sequence[Window], min_replicas: int, minute_of_week: int) -> int:
    """Replicas the cron triggers hold at a local minute of the week (KEDA takes the highest)."""
    return max([min_replicas, *(w.replicas for w in windows_ if w.covers(minute_of_week))])


def gpu_hours(windows_: Sequence[Window], min_replicas: int, gpus_per_replica: float) -> float:
    """GPU-hours the cron schedule holds over one week (the reactive trigger adds to it)."""
    step = 15
    total = sum(scheduled(windows_, min_replicas, minute) for minute in range(0, WEEK_MINUTES,
                                                                              step))
    return total * step / 60 * gpus_per_replica


def _cron(minute_of_day: int, days: Sequence[int]) -> str:
    # cron weekdays count from Sunday = 0; datetime's from Monday = 0.
    return (f"{minute_of_day % 60} {minute_of_day // 60} * * "
            f"{','.join(str((day + 1) % 7) for day in sorted(days))}")


def cron_trigger(window: Window, timezone: str) -> dict[str, Any]:
    end = window.start_minute + window.duration_minutes
    end_days = [(day + end // MINUTES_PER_DAY) % DAYS for day in window.days]
    return {"type": "cron", "name": _trigger_name(window),
            "metadata": {"timezone": timezone,
                         "start": _cron(window.start_minute, window.days),
                         "end": _cron(end % MINUTES_PER_DAY, end_days),
                         "desiredReplicas": str(window.replicas)}}


def _trigger_name(window: Window) -> str:
    if window.name:
        return window.name
    days = "".join(DAY_NAMES[d][:2].lower() for d in window.days)
    return f"prewarm-{days}-{window.start_minute // 60:02d}{window.start_minute % 60:02d}"


@dataclass(frozen=True)
class Reactive:
    server_address: str
    rate_query: str
    capacity: float
    queue_query: str | None = None
    queue_per_replica: float = 4.0


def scaled_object(*, name: str, target: str, bounds: Bounds, timezone: str,
                  windows_: Sequence[Window], reactive: Reactive,
                  labels: Mapping[str, str] | None = None,
                  scale_down_seconds: int = 600) -> dict[str, Any]:
    """The KEDA ScaledObject (keda.sh/v1alpha1) for ``target``, as plain data."""
    triggers = [cron_trigger(window, timezone) for window in windows_]
    triggers.append({"type": "prometheus", "name": "request-rate",
                     "metadata": {"serverAddress": reactive.server_address,
                                  "query": reactive.rate_query,
                                  "threshold": _number(reactive.capacity)}})
    if reactive.queue_query:
        triggers.append({"type": "prometheus", "name": "queue",
                         "metadata": {"serverAddress": reactive.server_address,
                                      "query": reactive.queue_query,
                                      "threshold": _number(reactive.queue_per_replica)}})
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(sorted(labels.items()))
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata,
            "spec": {"scaleTargetRef": {"name": target},
                     "minReplicaCount": bounds.min_replicas,
                     "maxReplicaCount": bounds.max_replicas,
                     "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                         "stabilizationWindowSeconds": scale_down_seconds}}}},
                     "triggers": triggers}}


def _number(value: float) -> str:
    return f"{value:g}"
