"""The forecast as a PNG for the merge request: last week seen, forecast, capacity held.

Rendered with matplotlib's Agg canvas (no display, no pyplot global state) at a fixed size
and resolution, with the PNG's metadata (the Software text chunk) left out, so the same plan
gives the same bytes and re-proposing an unchanged forecast changes nothing.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from promoter.core import prewarm

if TYPE_CHECKING:
    from promoter.forecasting import ForecastPlan

WIDTH_PX, HEIGHT_PX, DPI = 1000, 320, 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png(plan: ForecastPlan) -> bytes:
    """The plot's PNG: WIDTH_PX x HEIGHT_PX pixels, byte-identical for an identical plan."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from promoter.forecasting import zone

    fitted = plan.fitted
    buckets = len(fitted.mean)
    hours = [bucket * fitted.step_minutes / 60 for bucket in range(buckets)]
    capacity = [prewarm.scheduled(plan.windows, plan.bounds.min_replicas,
                                  bucket * fitted.step_minutes) * plan.bounds.capacity
                for bucket in range(buckets)]
    seen = [float("nan")] * buckets     # NaN: no sample in that bucket, a gap in the line
    tz = zone(plan.timezone)
    for moment, value in plan.history[-buckets:]:
        seen[fitted.bucket_of(moment, tz)] = value

    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(figure)       # the figure draws on Agg: no display, no pyplot state
    axes = figure.add_subplot()
    axes.plot(hours, seen, color="#999999", linewidth=0.8, label="last week seen")
    axes.fill_between(hours, fitted.mean, fitted.upper, color="#1f77b4", alpha=0.15,
                      linewidth=0, label="forecast band")
    axes.plot(hours, fitted.mean, color="#1f77b4", linewidth=1.2, label="forecast")
    axes.step(hours, capacity, where="post", color="#e67e22", linewidth=1.2,
              label="scheduled capacity")
    axes.set_xlim(0, 7 * 24)
    top = max([*fitted.upper, *capacity, *(v for v in seen if v == v), 1e-9])  # v == v: not NaN
    axes.set_ylim(0, top * 1.2)     # headroom for the legend above the peaks
    axes.set_xticks([day * 24 + 12 for day in range(7)], list(prewarm.DAY_NAMES))
    axes.tick_params(axis="x", length=0)
    for day in range(1, 7):
        axes.axvline(day * 24, color="#dddddd", linewidth=0.6, zorder=0)
    axes.set_ylabel("req/s")
    axes.set_title(f"{plan.deployment.name} in {plan.env}: week ahead ({plan.timezone})",
                   fontsize=10)
    axes.legend(loc="upper right", fontsize=8, ncols=4, frameon=False)
    figure.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
