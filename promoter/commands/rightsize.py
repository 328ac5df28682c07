"""`promoter rightsize`: smaller GPU resources where DCGM telemetry shows they suffice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, check_version, emit_json, state
from promoter.errors import UsageError

HELP = """Propose smaller resources for a deployment where the GPU telemetry supports it.

Reads DCGM exporter metrics (DCGM_FI_DEV_GPU_UTIL, DCGM_FI_DEV_FB_USED, DCGM_FI_DEV_FB_FREE)
of the deployment's pods and its request rate from Prometheus over --days, and proposes fewer
minimum replicas, a MIG profile (one the environment's nodes offer) instead of a whole GPU, or
fewer GPUs per replica, each with its evidence and estimated monthly saving
(telemetry.gpu_hour_prices). --propose re-renders the overlay with the smaller resources and
opens or updates the MR on rightsize/<name>/<env>, unless policy denies it.
"""


def rightsize(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="environment from promoter.yaml")],
    model: Annotated[str | None, typer.Argument(help="MLflow registered model name")] = None,
    version: Annotated[str | None, typer.Option("--version", "-v", callback=check_version,
                                                help="model version (default: the live one)")
                       ] = None,
    intent: Annotated[Path | None, typer.Option("--intent", "-i", dir_okay=False,
                                                help="ModelDeployment YAML file")] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=90, help="evidence window")] = 14,
    propose: Annotated[bool, typer.Option("--propose", help="open/update the MR")] = False,
    until: Annotated[str | None, typer.Option(
        "--until", help="end of the window (ISO 8601 with offset; default: now)")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter import forecasting, rightsizing
    from promoter.commands.forecast import _intent, _moment
    from promoter.service import composition

    if (intent is None) == (model is None):
        raise UsageError("give either --intent FILE or MODEL")
    settings = state(ctx).settings()
    document, origin, tags, ref = _intent(settings, env, model, version, intent)
    deployment, target = forecasting.resolve(settings, document, env, origin, ref)
    report = rightsizing.report(settings, deployment, target,
                                composition.metrics_source(settings), now=_moment(until),
                                days=days, tags=tags)
    result = None
    if propose:
        result = rightsizing.propose(settings, report, document, composition.provider(settings))
    if output == "json":
        emit_json({"proposals": [{"kind": p.kind, "field": p.field, "current": p.current,
                                  "proposed": p.proposed, "evidence": p.evidence,
                                  "gpu_hours_saved_month": round(p.gpu_hours_saved_month, 1),
                                  "saving": rightsizing.saving_text(report, p)}
                                 for p in report.proposals],
                   "evidence_days": round(report.evidence.days, 2),
                   "policy": report.decision.reasons if report.decision else [],
                   "mr_url": result.mr_url if result else None,
                   "outcome": result.outcome.value if result else None})
        return
    if not report.proposals:
        typer.echo(f"{deployment.name} in {env}: nothing to right-size "
                   f"({report.evidence.days:.1f} days of evidence)")
        return
    for p in report.proposals:
        typer.echo(f"{p.field}: {p.current} -> {p.proposed}  "
                   f"(saves {rightsizing.saving_text(report, p)}/month)\n  {p.evidence}")
    if report.decision is not None:
        for reason in report.decision.reasons:
            typer.echo(f"policy: {reason}")
    if result is not None:
        typer.echo(f"merge request: {result.mr_url or result.mr_iid} ({result.outcome.value})")
    else:
        typer.echo("dry run: nothing proposed")


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(rightsize)
