"""`promoter cost`: GPU-hours and their cost per team, model or environment."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, one_of, state

HELP = """GPU-hours and cost over a period, from the DCGM exporter metrics in Prometheus.

Each GPU a pod holds counts for every 5 minutes it reports; the price per GPU-hour comes from
telemetry.gpu_hour_prices by GPU type (DCGM's modelName, spaces as dashes). --by team reads the
team from kube_pod_labels (the cost label promoter renders); --by env maps namespaces to
environments.
"""


def cost(
    ctx: typer.Context,
    by: Annotated[str, typer.Option("--by", help="team, model or env",
                                    callback=one_of("team", "model", "env"))] = "model",
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="period length")] = 30,
    until: Annotated[str | None, typer.Option(
        "--until", help="end of the period (ISO 8601 with offset; default: now)")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter import rightsizing
    from promoter.commands.forecast import _moment
    from promoter.service import composition

    settings = state(ctx).settings()
    end = _moment(until)
    rows = rightsizing.cost(settings, composition.metrics_source(settings), by=by,
                            start=end - timedelta(days=days), end=end)
    currency = settings.telemetry.currency
    if output == "json":
        emit_json({"by": by, "days": days, "currency": currency,
                   "rows": [{by: r.key, "gpu_hours": round(r.gpu_hours, 2),
                             "cost": None if r.cost is None else round(r.cost, 2)}
                            for r in rows]})
        return
    typer.echo(f"{by:<24} {'GPU-hours':>10} {'cost ' + currency:>14}   (last {days} days)")
    for r in rows:
        shown = "no price" if r.cost is None else f"{r.cost:,.2f}"
        typer.echo(f"{r.key:<24} {r.gpu_hours:>10.1f} {shown:>14}")
    total = sum(r.gpu_hours for r in rows)
    typer.echo(f"{'total':<24} {total:>10.1f}")


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(cost)
