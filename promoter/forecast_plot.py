"""The forecast as an SVG image for the merge request: last week seen, forecast, capacity held.

SVG is text, so it travels through every git provider unchanged and GitLab shows it inline.
Values are numbers formatted by this module; no input text reaches the document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promoter.core import prewarm

if TYPE_CHECKING:
    from promoter.forecasting import ForecastPlan

WIDTH, HEIGHT, PAD = 840, 260, 30


def svg(plan: ForecastPlan) -> str:
    fitted = plan.fitted
    buckets = len(fitted.mean)
    capacity = [prewarm.scheduled(plan.windows, plan.bounds.min_replicas,
                                  bucket * fitted.step_minutes) * plan.bounds.capacity
                for bucket in range(buckets)]
    seen: list[float | None] = [None] * buckets
    tz = _zone(plan.timezone)
    for moment, value in plan.history[-buckets:]:
        seen[fitted.bucket_of(moment, tz)] = value
    top = max([*fitted.upper, *capacity, *(v for v in seen if v is not None), 1e-9]) * 1.05

    def path(values: list[float | None]) -> str:
        parts, pen = [], "M"
        for index, value in enumerate(values):
            if value is None:
                pen = "M"
                continue
            x = PAD + index * (WIDTH - 2 * PAD) / (buckets - 1)
            y = HEIGHT - PAD - value / top * (HEIGHT - 2 * PAD)
            parts.append(f"{pen}{x:.1f},{y:.1f}")
            pen = "L"
        return " ".join(parts)

    days = "".join(
        f'<text x="{PAD + (d + 0.5) * (WIDTH - 2 * PAD) / 7:.0f}" y="{HEIGHT - 10}" '
        f'font-size="11" text-anchor="middle">{prewarm.DAY_NAMES[d]}</text>' for d in range(7))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<path d="{path(list(capacity))}" fill="none" stroke="#e67e22" stroke-width="1.5"/>'
            f'<path d="{path(seen)}" fill="none" stroke="#999" stroke-width="1"/>'
            f'<path d="{path(list(fitted.mean))}" fill="none" stroke="#1f77b4" '
            f'stroke-width="1.5"/>{days}'
            f'<text x="{PAD}" y="16" font-size="12">req/s (max {top:.0f}): grey last week, '
            f'blue forecast, orange scheduled capacity</text></svg>\n')


def _zone(name: str):  # type: ignore[no-untyped-def]
    from promoter.forecasting import zone

    return zone(name)
