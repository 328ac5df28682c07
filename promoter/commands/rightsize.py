"""`promoter rightsize`: smaller GPU resources where DCGM telemetry shows they suffice."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from promoter.core.rightsize import Evidence

HELP = """Propose smaller resources for a deployment where the GPU telemetry supports it.

Reads DCGM exporter metrics (DCGM_FI_DEV_GPU_UTIL, or DCGM_FI_PROF_GR_ENGINE_ACTIVE where a GPU
or MIG instance has none; DCGM_FI_DEV_FB_USED, DCGM_FI_DEV_FB_FREE) of the deployment's pods
and its request rate from Prometheus over --days, and proposes fewer minimum replicas, a MIG
profile (one the environment's nodes offer) instead of a whole GPU or a larger profile, or
fewer GPUs (MIG instances) per replica, each with its evidence and estimated monthly saving
(telemetry.gpu_hour_prices). For a runtime that reserves GPU memory at start (vLLM) only
replicas are sized: its memory use is no evidence. --propose re-renders the overlay with the
smaller resources and opens or updates the MR on rightsize/<name>/<env>, unless policy denies
it.
Without MODEL and --intent, every registered model live in --env (default: every environment)
is judged; deployments that cannot be judged are listed as skipped.
"""


def rightsize(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option(
        "--env", "-e", help="environment from promoter.yaml (default: every one)")] = None,
    model: Annotated[str | None, typer.Argument(help="MLflow registered model name")] = None,
    version: LiveVersion = None,
    intent: IntentFile = None,
    days: Annotated[int, typer.Option("--days", min=1, max=90, help="evidence window")] = 14,
    propose: ProposeFlag = False,
    until: Annotated[str | None, typer.Option(
        "--until", help="end of the window (ISO 8601 with offset; default: now)")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter import forecasting, rightsizing
    from promoter.commands.forecast import _intent, _moment
    from promoter.service import composition

    if intent is not None and model is not None:
        raise UsageError("give either --intent FILE or MODEL, not both")
    settings = state(ctx).settings()
    if intent is None and model is None:
        if version is not None:
            raise UsageError("--version needs MODEL")
        raise typer.Exit(_fleet(settings, env, days, propose, until, output))
    if env is None:
        raise UsageError("MODEL and --intent need --env ENV")
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
                   "utilisation": _utilisation(report.evidence),
                   "notes": list(report.notes()),
                   "policy": report.decision.reasons if report.decision else [],
                   "mr_url": result.mr_url if result else None,
                   "outcome": result.outcome.value if result else None})
        return
    for note in report.notes():
        typer.echo(f"note: {note}")
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


def _fleet(settings: Any, env: str | None, days: int, propose: bool, until: str | None,
           output: str) -> int:
    """Every registered model live in ``env`` (or in every environment): one report each.

    A deployment that cannot be judged (no telemetry in its runtime, an invalid intent) is
    listed as skipped; one that policy denies is not proposed, and the exit code says so (4).
    """
    from promoter import forecasting, rightsizing
    from promoter.commands.forecast import _intent, _moment
    from promoter.errors import EXIT_POLICY, PolicyDenied, UserError
    from promoter.service import composition

    registry = composition.registry(settings)
    metrics = composition.metrics_source(settings)
    provider = composition.provider(settings) if propose else None
    now = _moment(until)
    envs = [env] if env else sorted(settings.environments)
    for name in envs:
        settings.environment(name)   # an unknown environment fails before any query
    rows: list[dict[str, Any]] = []
    denied = False
    for info in registry.models():
        for where in envs:
            environment = settings.environment(where)
            live = registry.current_version(info.name, environment.trigger.alias,
                                            environment.trigger.stage)
            if live is None:
                continue
            row: dict[str, Any] = {"model": info.name, "version": live, "env": where}
            try:
                document, origin, tags, ref = _intent(settings, where, info.name, live, None)
                deployment, target = forecasting.resolve(settings, document, where, origin, ref)
                report = rightsizing.report(settings, deployment, target, metrics, now=now,
                                            days=days, tags=tags)
                row.update(name=deployment.name, proposals=[
                    {"field": p.field, "current": p.current, "proposed": p.proposed,
                     "evidence": p.evidence, "saving": rightsizing.saving_text(report, p)}
                    for p in report.proposals])
                if provider is not None and report.proposals:
                    result = rightsizing.propose(settings, report, document, provider)
                    row["mr_url"] = result.mr_url if result else None
            except PolicyDenied as exc:
                denied = True
                row["denied"] = exc.reasons
            except UserError as exc:
                row["skipped"] = str(exc)
            rows.append(row)
    if output == "json":
        emit_json({"deployments": rows})
    else:
        for row in rows:
            head = f"{row.get('name', row['model'])} ({row['env']}, version {row['version']})"
            if "skipped" in row:
                typer.echo(f"{head}: skipped: {row['skipped']}")
            elif "denied" in row:
                typer.echo(f"{head}: not proposed, policy denies: {'; '.join(row['denied'])}")
            elif not row["proposals"]:
                typer.echo(f"{head}: nothing to right-size")
            else:
                for p in row["proposals"]:
                    typer.echo(f"{head}: {p['field']}: {p['current']} -> {p['proposed']} "
                               f"(saves {p['saving']}/month)")
    return EXIT_POLICY if denied else 0


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(rightsize)


def _utilisation(evidence: Evidence) -> dict[str, Any]:
    """Which metric the utilisation came from and its p95s (None: no samples)."""
    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 1)

    return {"metrics": list(evidence.util_metrics), "p95": number(evidence.util_p95),
            "sum_p95": number(evidence.util_sum_p95)}
