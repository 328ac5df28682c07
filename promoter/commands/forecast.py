"""`promoter forecast`: a week-ahead KEDA ScaledObject from Prometheus telemetry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from promoter.commands._common import (
    OUTPUT_OPTION,
    IntentFile,
    LiveVersion,
    ProposeFlag,
    emit_json,
    state,
)
from promoter.errors import UsageError

HELP = """Forecast next week's demand and propose a KEDA ScaledObject that pre-warms for it.

Reads the deployment's request rate from Prometheus (prometheus.url; PromQL from the runtime's
telemetry block) over forecast.history_days, fits a daily + weekly seasonal model, and renders
cron triggers that raise replicas one cold-start lead time before each forecast rise (in
forecast.timezone), plus Prometheus triggers on the live request rate (and queue, where the
runtime exposes one) for what the forecast misses, bounded by the intent's min/max and the team
GPU quota. Without --propose it
prints the ScaledObject and a summary; --propose opens or updates the MR on scale/<name>/<env>,
which also commits the forecast plot as a PNG, <manifests_dir>/<name>/forecast-<env>.png, shown
in the MR description.
The intent comes from --intent FILE or from MLflow (MODEL, the version the environment runs, or
--version N).
"""


def forecast(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="environment from promoter.yaml")],
    model: Annotated[str | None, typer.Argument(help="MLflow registered model name")] = None,
    version: LiveVersion = None,
    intent: IntentFile = None,
    propose: ProposeFlag = False,
    until: Annotated[str | None, typer.Option(
        "--until", help="end of the history (ISO 8601 with offset; default: now)")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter import forecasting
    from promoter.service import composition

    if (intent is None) == (model is None):
        raise UsageError("give either --intent FILE or MODEL")
    settings = state(ctx).settings()
    now = _moment(until)
    document, origin, tags, ref = _intent(settings, env, model, version, intent)
    deployment, target = forecasting.resolve(settings, document, env, origin, ref)
    plan = forecasting.plan(settings, deployment, target, composition.metrics_source(settings),
                            now=now, tags=tags)
    result = None
    if propose:
        result = forecasting.propose(settings, plan, document, composition.provider(settings))
    if output == "json":
        emit_json({"scaled_object": plan.scaled_object, "summary": forecasting.summary_rows(plan),
                   "gpu_hours_week": plan.gpu_hours_week,
                   "static_gpu_hours_week": plan.static_gpu_hours_week,
                   "lead_minutes": plan.lead_minutes, "lead_source": plan.lead_source,
                   "policy": plan.decision.reasons,
                   "mr_url": result.mr_url if result else None,
                   "plot": forecasting.plot_path(settings, plan) if result else None,
                   "outcome": result.outcome.value if result else None})
        return
    if result is None:
        typer.echo(forecasting.dump_yaml(plan.scaled_object), nl=False)
        typer.echo("---")
    _table(forecasting.summary_rows(plan))
    typer.echo(f"GPU-hours/week: {plan.gpu_hours_week:.1f} scheduled vs "
               f"{plan.static_gpu_hours_week:.1f} at maxReplicas; lead {plan.lead_minutes} min "
               f"({plan.lead_source}); "
               f"replicas {plan.bounds.min_replicas}..{plan.bounds.max_replicas}")
    if plan.price_per_gpu_hour is not None:
        typer.echo(f"cost/week: {plan.gpu_hours_week * plan.price_per_gpu_hour:,.2f} "
                   f"{plan.currency} scheduled")
    for reason in plan.decision.reasons:
        typer.echo(f"policy: {reason}")
    if result is not None:
        typer.echo(f"merge request: {result.mr_url or result.mr_iid} ({result.outcome.value}); "
                   f"plot: {forecasting.plot_path(settings, plan)}")
    elif not plan.decision.allowed:
        typer.echo("dry run: a proposal would be refused by policy")
    else:
        typer.echo("dry run: nothing proposed")


def _moment(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--until {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise UsageError("--until needs a UTC offset, e.g. 2026-11-30T00:00:00+00:00")
    return moment


def _intent(settings: Any, env: str, model: str | None, version: str | None,
            intent: Path | None) -> tuple[dict[str, Any], str, dict[str, str], Any]:
    from promoter import rendering

    if intent is not None:
        return rendering.load_intent_file(intent), str(intent), {}, None
    from promoter.core.spec import ModelRef
    from promoter.errors import UserError
    from promoter.model_source import intent_document
    from promoter.service import composition

    assert model is not None   # the command requires MODEL or --intent
    registry = composition.registry(settings)
    environment = settings.environment(env)
    chosen = version or registry.current_version(model, environment.trigger.alias,
                                                 environment.trigger.stage)
    if chosen is None:
        raise UserError(f"no version of {model!r} is live in {env}", hint="pass --version N")
    info = registry.model_version(model, chosen)
    return (intent_document(registry, info), f"MLflow model {model!r} version {chosen}",
            dict(info.tags), ModelRef(name=model, version=chosen))


def _table(rows: list[dict[str, Any]]) -> None:
    typer.echo(f"{'day':<4} {'peak req/s':>10} {'replicas':>8} {'GPU-hours':>9}")
    for row in rows:
        typer.echo(f"{row['day']:<4} {row['peak_rps']:>10} {row['max_replicas']:>8} "
                   f"{row['gpu_hours']:>9}")


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(forecast)
