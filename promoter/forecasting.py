"""The `promoter forecast` use case: telemetry in, a KEDA ScaledObject for the overlay out.

Reads the deployment's request-rate history from Prometheus (PromQL from the runtime
descriptor's ``telemetry`` block), fits the seasonal model (core.forecast), turns the week
ahead into pre-warm windows plus a reactive trigger (core.prewarm), bounds them by the intent's
min/max and the team GPU quota, asks the policy verdict, and either prints the result or
proposes it as a merge request on ``scale/<name>/<env>``.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ruamel.yaml import YAML

from promoter import rendering
from promoter.core import forecast as model
from promoter.core import keda_overlay, mr_text, prewarm, rightsize, tree_facts
from promoter.core.config import EnvironmentTarget
from promoter.core.gates import GateFacts, judges_the_version
from promoter.core.intent import resolve_intent
from promoter.core.masking import without_url_credentials
from promoter.core.naming import pods_pattern
from promoter.core.policy import Decision
from promoter.core.runtimes import RuntimeDescriptor, Telemetry, parse_descriptors
from promoter.core.spec import ModelDeployment, ModelRef, deep_merge
from promoter.core.verdict import verdict
from promoter.errors import ConfigError, PolicyDenied, UserError
from promoter.policy_check import claimed_by_others
from promoter.ports.git import FileContent, GitProvider, Proposal, ProposalResult
from promoter.ports.metrics import MetricsSource, Series
from promoter.rendering import load_descriptors, templates_dir
from promoter.settings import Settings

SCALE_BRANCH_PREFIX = "scale"
KEDA_WINDOW = "2m"


@dataclass(frozen=True)
class ForecastPlan:
    deployment: ModelDeployment
    env: str
    namespace: str
    platform: str
    target: str
    timezone: str
    bounds: prewarm.Bounds
    lead_minutes: int
    lead_source: str               # configured | measured | runtime default
    windows: tuple[prewarm.Window, ...]
    fitted: model.Forecast
    scaled_object: dict[str, Any]
    gpu_hours_week: float          # what the cron schedule holds
    static_gpu_hours_week: float   # maxReplicas all week, for comparison
    price_per_gpu_hour: float | None
    currency: str
    decision: Decision
    history: tuple[tuple[datetime, float], ...]

    @property
    def gpus(self) -> float:
        """Whole GPUs one replica holds (a MIG slice its share), as `promoter cost` counts."""
        gpu = self.deployment.spec.resources.gpu
        return rightsize.gpus_held(gpu.count, gpu.mig)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"forecast.timezone {name!r} is not an IANA time zone",
                          hint="e.g. Europe/Berlin, America/New_York, UTC") from None


def descriptor_of(settings: Settings, deployment: ModelDeployment) -> RuntimeDescriptor:
    descriptors = parse_descriptors(load_descriptors(templates_dir(settings)))
    descriptor = descriptors.get(deployment.spec.runtime)
    if descriptor is None:
        raise UserError(f"unknown runtime {deployment.spec.runtime!r}")
    return descriptor


def telemetry_of(descriptor: RuntimeDescriptor) -> Telemetry:
    if descriptor.telemetry is None:
        raise UserError(f"runtime {descriptor.name} declares no telemetry (request-rate PromQL), "
                        "so there is nothing to forecast from",
                        hint=f"add a telemetry: block to templates/{descriptor.name}/runtime.yaml "
                             "(see the README: Telemetry)")
    return descriptor.telemetry


def resolve(settings: Settings, intent: Mapping[str, Any], env: str, origin: str,
            model_ref: ModelRef | None = None) -> tuple[ModelDeployment, EnvironmentTarget]:
    targets = settings.targets()
    target = targets.environment(env)
    return resolve_intent(targets, intent, env, origin=origin, model=model_ref), target


def plan(settings: Settings, deployment: ModelDeployment, target: EnvironmentTarget,
         metrics: MetricsSource, *, now: datetime, tags: Mapping[str, str] | None = None,
         claimed: Mapping[str, int] | None = None) -> ForecastPlan:
    """Fit the week ahead from the ``forecast.history_days`` before ``now`` and plan it.
    ``claimed``: the GPUs the team's other deployments claim here (default: counted as the
    pipeline counts them, policy_check.claimed_by_others)."""
    server = keda_server_address(settings)   # refused before any query when it would leak
    if claimed is None:
        claimed = claimed_by_others(settings, settings.pipeline_config(), target.name,
                                    deployment)
    config = settings.forecast
    tz = zone(config.timezone)
    descriptor = descriptor_of(settings, deployment)
    telemetry = telemetry_of(descriptor)
    name, namespace = deployment.name, target.namespace
    step = config.step_minutes
    query = telemetry.render(telemetry.request_rate, name=name, namespace=namespace,
                             window=f"{step}m")
    start = now - timedelta(days=config.history_days)
    history = request_rate_points(metrics.query_range(query, start, now, step * 60))
    fitted = model.fit(history, tz, step_minutes=step, z=config.quantile_z)
    spec = deployment.spec
    capacity = float(spec.scaling.target) if spec.scaling.metric == "rps" \
        else config.requests_per_replica
    bounds = prewarm.Bounds(spec.scaling.min_replicas,
                            quota_bounded_max(settings, deployment, claimed), capacity)
    measured = None
    if config.lead_time_seconds is None:
        measured = measured_startup_seconds(metrics, name=name, namespace=namespace,
                                            start=start, end=now)
    lead_seconds = (config.lead_time_seconds if config.lead_time_seconds is not None
                    else measured if measured is not None else telemetry.startup_seconds)
    lead = math.ceil(lead_seconds / 60)
    schedule = prewarm.hourly_replicas(fitted, bounds)
    windows = tuple(prewarm.windows(schedule, bounds.min_replicas, lead))
    platform = descriptor.platform(deployment)
    scale_target = keda_overlay.scale_target(platform, name)
    reactive = prewarm.Reactive(
        server_address=server, capacity=capacity, queue_per_replica=config.queue_per_replica,
        rate_query=telemetry.render(telemetry.request_rate, name=name, namespace=namespace,
                                    window=KEDA_WINDOW),
        queue_query=telemetry.render(telemetry.queue, name=name, namespace=namespace,
                                     window=KEDA_WINDOW) if telemetry.queue else None)
    scaled = prewarm.scaled_object(
        name=name, target=scale_target, bounds=bounds, timezone=config.timezone,
        windows_=windows, reactive=reactive,
        labels={"app.kubernetes.io/managed-by": "promoter"})
    gpus = rightsize.gpus_held(spec.resources.gpu.count, spec.resources.gpu.mig)
    bounded = deployment.model_copy(update={"spec": spec.model_copy(update={
        "scaling": spec.scaling.model_copy(update={"max_replicas": bounds.max_replicas})})})
    decision = policy_verdict(settings, target, bounded, tags or {}, now, claimed)
    return ForecastPlan(
        deployment=deployment, env=target.name, namespace=namespace, platform=platform,
        target=scale_target, timezone=config.timezone, bounds=bounds, lead_minutes=lead,
        lead_source=("configured" if config.lead_time_seconds is not None
                     else "measured" if measured is not None else "runtime default"),
        windows=windows, fitted=fitted, scaled_object=scaled,
        gpu_hours_week=prewarm.gpu_hours(windows, bounds.min_replicas, gpus),
        static_gpu_hours_week=bounds.max_replicas * gpus * 24 * 7.0,
        price_per_gpu_hour=gpu_hour_price(settings, spec.resources.gpu.type),
        currency=settings.telemetry.currency, decision=decision, history=tuple(history))


def keda_server_address(settings: Settings) -> str:
    """The prometheus triggers' ``serverAddress``: prometheus.cluster_url, else prometheus.url.
    It is committed to the GitOps repository, so it must carry no credentials: settings refuse
    them in cluster_url, and a prometheus.url with userinfo or a token parameter is refused
    here rather than copied into the manifest."""
    prometheus = settings.prometheus
    if prometheus.cluster_url:
        return prometheus.cluster_url
    url = prometheus.url or ""
    if without_url_credentials(url) != url:
        raise UserError(
            "prometheus.url carries credentials (user:password@ or a token parameter), and "
            "the KEDA ScaledObject's serverAddress would commit them to the GitOps repository",
            hint="set prometheus.cluster_url to Prometheus' address without credentials (as "
                 "KEDA reaches it in the cluster); KEDA authenticates through a "
                 "TriggerAuthentication that references a Secret")
    return url


def request_rate_points(series: list[Series]) -> tuple[tuple[datetime, float], ...]:
    """The deployment's request rate: the one series the runtime's requestRate gives (none
    without traffic). Several (per pod, not summed) are refused rather than one of them read
    as the whole deployment's demand."""
    if len(series) > 1:
        raise UserError(f"the request-rate query returned {len(series)} series, not one",
                        hint="the runtime's telemetry.requestRate must aggregate (sum(...))")
    return series[0].points if series else ()


STARTUP_QUERY = ('max by (pod) (kube_pod_status_ready_time{{namespace="{namespace}",'
                 'pod=~"{pods}"}}) - max by (pod) (kube_pod_created{{namespace="{namespace}",'
                 'pod=~"{pods}"}})')


def measured_startup_seconds(metrics: MetricsSource, *, name: str, namespace: str,
                             start: datetime, end: datetime) -> int | None:
    """The slowest cold start seen: pod created → first Ready, from kube-state-metrics, or
    None.

    The slowest (not the typical) start decides, so a window opens early enough for it.
    ``kube_pod_status_ready_time`` is the Ready condition's last transition, which moves on
    every readiness flap (and reads near the creation time while the pod is not yet ready):
    a pod's earliest positive value is its first Ready, later ones would count a flap hours
    after the start as the start.
    """
    query = STARTUP_QUERY.format(pods=pods_pattern(name), namespace=namespace)
    seconds = [min(started) for item in metrics.query_range(query, start, end, 3600)
               if (started := [value for _, value in item.points if 0 < value < 6 * 3600])]
    return math.ceil(max(seconds)) if seconds else None


def quota_bounded_max(settings: Settings, deployment: ModelDeployment,
                      claimed: Mapping[str, int]) -> int:
    """maxReplicas, lowered so gpu.count x maxReplicas stays within what is left of the team's
    GPU quota once its other deployments' GPUs (``claimed``, team → GPUs) are counted: the
    whole quota would let a plan the pipeline denies. Never below minReplicas (a plan that
    cannot fit even then is left to the verdict, which denies it)."""
    spec = deployment.spec
    limit = settings.policy.team_gpu_quota.get(spec.owner.team,
                                               settings.policy.default_team_gpu_quota)
    if limit is None or spec.resources.gpu.count == 0:
        return spec.scaling.max_replicas
    left = max(0, limit - claimed.get(spec.owner.team, 0))
    return max(spec.scaling.min_replicas,
               min(spec.scaling.max_replicas, left // spec.resources.gpu.count))


def gpu_hour_price(settings: Settings, gpu_type: str | None) -> float | None:
    prices = settings.telemetry.gpu_hour_prices
    return prices.get(gpu_type or "", prices.get("default"))


def policy_verdict(settings: Settings, target: EnvironmentTarget, deployment: ModelDeployment,
                   tags: Mapping[str, str], now: datetime,
                   claimed: Mapping[str, int]) -> Decision:
    """The policy on a re-sized deployment of a version already promoted: placement, quota
    and team rules; not the gates that judge the version itself (its metrics, its soak),
    which it passed when promoted and which read facts this change does not gather. The quota
    counts ``claimed`` (team → GPUs of its other deployments here), as the pipeline does."""
    config = settings.pipeline_config()
    placement = dataclasses.replace(config.policy, gates=tuple(
        gate for gate in config.policy.gates if not judges_the_version(gate)))
    facts = GateFacts(model=deployment.spec.model.name, version=deployment.spec.model.version,
                      env=target.name, namespace=target.namespace, tags=dict(tags), metrics={},
                      params={}, now=now.timestamp(), live_since=lambda _where: None,
                      claimed=dict(claimed))
    return verdict(placement, target, deployment, facts)


def dump_yaml(data: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


def scaled_object_text(plan_: ForecastPlan) -> str:
    """The ScaledObject as the overlay's scaledobject.yaml holds it."""
    return dump_yaml(plan_.scaled_object)


def summary_rows(plan_: ForecastPlan) -> list[dict[str, Any]]:
    """One row per local weekday: forecast peak, replicas at peak, scheduled GPU-hours."""
    per_day = plan_.fitted.buckets_per_day
    rows = []
    for day in range(7):
        peak = max(plan_.fitted.mean[day * per_day:(day + 1) * per_day])
        replicas = [prewarm.scheduled(plan_.windows, plan_.bounds.min_replicas, minute)
                    for minute in range(day * 1440, (day + 1) * 1440, 15)]
        rows.append({"day": prewarm.DAY_NAMES[day], "peak_rps": round(peak, 1),
                     "max_replicas": max(replicas),
                     "gpu_hours": round(sum(replicas) * 0.25 * plan_.gpus, 1)})
    return rows


def branch_for(name: str, env: str) -> str:
    return f"{SCALE_BRANCH_PREFIX}/{name}/{env}"


def propose(settings: Settings, plan_: ForecastPlan, intent: Mapping[str, Any],
            provider: GitProvider) -> ProposalResult:
    """Open or update the MR on ``scale/<name>/<env>``; never one that breaks a guardrail.

    The overlay is re-rendered with the ScaledObject as its accepted scaling, exactly as the
    next promotion will render it (rendering.proposal_overlay keeps the signed artifact and
    lineage the overlay runs), rather than edited: an edit that re-serialised the kustomization
    left its annotations in a form promoter's readers (core.tree_facts) cannot read back.
    """
    if not plan_.decision.allowed:
        raise PolicyDenied(plan_.decision.reasons)
    root, name = settings.git.manifests_dir.strip("/"), plan_.deployment.name
    overlay = f"{root}/{name}/overlays/{plan_.env}"
    files: dict[str, FileContent | None] = dict(rendering.proposal_overlay(
        settings, provider, quota_bounded_intent(intent, plan_), plan_.deployment, plan_.env,
        origin="forecast intent", scaling=scaled_object_text(plan_)))
    from promoter.forecast_plot import png

    plot = plot_path(settings, plan_)
    files[plot] = png(plan_)
    env = settings.environment(plan_.env)
    # The overlay is managed whole: promoter's HPA patch (KEDA scales now) and an earlier
    # release's forecast.svg, files the render no longer has, go away.
    return provider.propose(Proposal(
        model=plan_.deployment.spec.model.name, name=name, env=plan_.env,
        version=plan_.deployment.spec.model.version, files=files,
        managed_prefixes=(f"{overlay}/",),
        title=f"Scale {name} in {plan_.env} ahead of forecast demand",
        description=description(plan_, plot), labels=("promoter", "scaling"),
        approvals_required=env.approvals, target_branch=settings.git.target_branch,
        branch_name=branch_for(name, plan_.env)))


def quota_bounded_intent(intent: Mapping[str, Any], plan_: ForecastPlan) -> Mapping[str, Any]:
    """``intent`` with the plan's quota-lowered ``maxReplicas`` as a ``spec.environments.<env>``
    override (as `promoter rightsize` carries its changes), or ``intent`` when nothing was
    lowered.

    The verdict judged the lowered bound; the render bounds the ScaledObject
    (core.keda_overlay.bounded) and writes the overlay's GPU claim from the intent it is
    given, so rendered from the intent as it is, the committed overlay would scale to the
    intent's own maximum, past the team quota the plan and the policy were held to."""
    if plan_.bounds.max_replicas >= plan_.deployment.spec.scaling.max_replicas:
        return intent
    spec = dict(intent.get("spec") or {})
    environments = dict(spec.get("environments") or {})
    environments[plan_.env] = deep_merge(environments.get(plan_.env) or {}, {
        "scaling": {"maxReplicas": plan_.bounds.max_replicas}})
    return {**intent, "spec": {**spec, "environments": environments}}


def plot_path(settings: Settings, plan_: ForecastPlan) -> str:
    """The repository path of the plan's PNG (core.tree_facts.forecast_plot)."""
    return tree_facts.forecast_plot(settings.git.manifests_dir.strip("/"),
                                    plan_.deployment.name, plan_.env)


def description(plan_: ForecastPlan, plot: str) -> str:
    saving = plan_.static_gpu_hours_week - plan_.gpu_hours_week
    lines = [
        "## Predictive scaling", "",
        f"promoter forecast the request rate of {mr_text.code(plan_.deployment.name)} in "
        f"{mr_text.code(plan_.env)} for the next week from "
        f"{plan_.fitted.weeks_seen:.1f} weeks of Prometheus history (daily + weekly seasonal "
        f"model, spread {plan_.fitted.relative_spread:.1%}).", "",
        f"- KEDA ScaledObject on {mr_text.code(plan_.target)}: replicas "
        f"{plan_.bounds.min_replicas}..{plan_.bounds.max_replicas} (intent and team GPU quota), "
        f"{len(plan_.windows)} pre-warm window(s) in {mr_text.code(plan_.timezone)} opening "
        f"{plan_.lead_minutes} min ({plan_.lead_source} cold start) before each rise, plus a "
        "Prometheus trigger at "
        f"{plan_.bounds.capacity:g} req/s per replica for what the forecast misses.",
        f"- Expected GPU-hours per week: **{plan_.gpu_hours_week:.0f}** scheduled (reactive "
        f"scaling adds to it), against {plan_.static_gpu_hours_week:.0f} at maxReplicas all "
        f"week ({saving:.0f} fewer).",
    ]
    intended = plan_.deployment.spec.scaling.max_replicas
    if plan_.bounds.max_replicas < intended:
        # The overlay carries the lowered bound; the intent still says more, and the next
        # promotion renders from the intent (the quota then judges the intent's maximum).
        lines.append(
            f"- `maxReplicas` lowered from {intended} (the intent) to "
            f"{plan_.bounds.max_replicas}, what the team GPU quota leaves: keep it by setting "
            f"{mr_text.code(f'spec.environments.{plan_.env}.scaling.maxReplicas')} to "
            f"{plan_.bounds.max_replicas} in the model's intent; the next promotion renders "
            "from the intent.")
    if plan_.price_per_gpu_hour is not None:
        lines.append(f"- At {plan_.price_per_gpu_hour:g} {plan_.currency}/GPU-hour: "
                     f"{plan_.gpu_hours_week * plan_.price_per_gpu_hour:,.0f} "
                     f"{plan_.currency}/week scheduled.")
    lines += ["", "| day | peak req/s | replicas | GPU-hours |", "|---|---:|---:|---:|"]
    lines += [f"| {r['day']} | {r['peak_rps']} | {r['max_replicas']} | {r['gpu_hours']} |"
              for r in summary_rows(plan_)]
    # GitLab turns a relative link in an MR description into one to the repository file
    # (its raw blob for an image) on the project's default branch.
    lines += ["", f"![Forecast: last week seen, forecast and scheduled capacity]({plot})", "",
              f"The plot is committed as {mr_text.code(plot)} (the MR's changes show this "
              "version of it): the last week seen (grey), the forecast with its band (blue), "
              "and the capacity the schedule holds (orange).", ""]
    return "\n".join(lines)
