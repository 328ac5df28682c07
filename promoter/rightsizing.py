"""The `promoter rightsize` and `promoter cost` use cases: DCGM telemetry in, evidence out.

DCGM exporter series carry ``namespace`` and ``pod`` labels when its Kubernetes mapping is on;
a deployment's GPUs are the series of its pods (``<name>-…``) in the environment's namespace.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from promoter.core import rightsize, utilisation
from promoter.core.config import EnvironmentTarget
from promoter.core.naming import deployment_of_pod, pods_pattern
from promoter.core.policy import Decision
from promoter.core.runtimes import Telemetry
from promoter.core.spec import ModelDeployment, deep_merge
from promoter.errors import PolicyDenied, UserError
from promoter.forecasting import (
    descriptor_of,
    gpu_hour_price,
    policy_verdict,
    request_rate_points,
    telemetry_of,
    zone,
)
from promoter.policy_check import claimed_by_others
from promoter.ports.git import GitProvider, Proposal, ProposalResult
from promoter.ports.metrics import MetricsSource, Series
from promoter.settings import Settings

STEP_SECONDS = 300
SELECTOR = '{{namespace="{namespace}",pod=~"{pods}"}}'
UTIL, GR_ACTIVE = utilisation.GPU_UTIL, utilisation.GR_ENGINE_ACTIVE
FB_USED, FB_FREE = "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"
MIG_LABEL = "GPU_I_PROFILE"   # dcgm-exporter's label on a MIG instance's series, e.g. 1g.10gb
MIG_INSTANCE = "GPU_I_ID"     # and the instance's id on its GPU
RIGHTSIZE_BRANCH_PREFIX = "rightsize"


@dataclass(frozen=True)
class Report:
    deployment: ModelDeployment
    env: str
    evidence: rightsize.Evidence
    proposals: tuple[rightsize.Proposal, ...]
    price_per_gpu_hour: float | None
    currency: str
    decision: Decision | None        # the verdict on the right-sized deployment
    memory_is_evidence: bool = True  # False: no MIG/GPU-count proposal from framebuffer use

    def notes(self) -> tuple[str, ...]:
        notes = []
        if not self.memory_is_evidence:
            notes.append(f"GPU memory is not evidence for the {self.deployment.spec.runtime} "
                         "runtime: it reserves a fixed share of each GPU at start, so only "
                         "replicas are sized")
        elif self.evidence.days and math.isnan(self.evidence.util_p95):
            notes.append(f"no {UTIL} samples (DCGM exports none for a MIG instance) and no "
                         f"{GR_ACTIVE} either (dcgm-exporter's default counters since 4.0, "
                         "or dcp-metrics-included.csv): no MIG profile or GPU count is "
                         "proposed, only replicas are sized")
        elif GR_ACTIVE in self.evidence.util_metrics:
            notes.append("utilisation from " + utilisation.describe(self.evidence.util_metrics)
                         + f" (where a GPU reports no {UTIL}, as a MIG instance never does; "
                         "on a MIG instance it is the share of the instance's own compute)")
        return tuple(notes)


def _by_gpu(series: list[Series], keep: Callable[[float, float], float] = max
            ) -> dict[tuple[str, str, str], dict[float, float]]:
    """Each GPU's samples by (pod, gpu, MIG instance), keyed by timestamp: pods come and go
    in a window, and one pod's slices of one GPU are apart only by ``GPU_I_ID``.

    One device's history can come as several series: a restarted dcgm-exporter has a new
    ``instance``, a driver upgrade a new ``DCGM_FI_DRIVER_VERSION``. Their samples are merged
    (keeping only the last series dropped the days before the restart, while the days of
    evidence counted them). Where two series hold the same timestamp, ``keep`` picks the
    reading: the larger by default, which sizes nothing smaller than either one measured.
    """
    merged: dict[tuple[str, str, str], dict[float, float]] = {}
    for one in series:
        key = (one.labels.get("pod", ""), one.labels.get("gpu", ""),
               one.labels.get(MIG_INSTANCE, ""))
        samples = merged.setdefault(key, {})
        for moment, value in one.points:
            stamp = moment.timestamp()
            samples[stamp] = keep(samples[stamp], value) if stamp in samples else value
    return merged


def evidence(settings: Settings, deployment: ModelDeployment, target: EnvironmentTarget,
             metrics: MetricsSource, telemetry: Telemetry, *, now: datetime,
             days: int) -> rightsize.Evidence:
    name, namespace = deployment.name, target.namespace
    selector = SELECTOR.format(namespace=namespace, pods=pods_pattern(name))
    start = now - timedelta(days=days)
    util = _by_gpu(metrics.query_range(UTIL + selector, start, now, STEP_SECONDS))
    engine = _by_gpu(metrics.query_range(GR_ACTIVE + selector, start, now, STEP_SECONDS))
    used_series = metrics.query_range(FB_USED + selector, start, now, STEP_SECONDS)
    used = _by_gpu(used_series)
    # The smaller free reading with the larger used one: a GPU's size (used + free) is not
    # overstated where two series of it overlap.
    free = _by_gpu(metrics.query_range(FB_FREE + selector, start, now, STEP_SECONDS),
                   keep=min)
    rate_query = telemetry.render(telemetry.request_rate, name=name, namespace=namespace,
                                  window="5m")
    rates = request_rate_points(metrics.query_range(rate_query, start, now, STEP_SECONDS))
    tz = zone(settings.forecast.timezone)
    hours: dict[tuple[int, int, int, int], list[float]] = defaultdict(list)
    for moment, value in rates:
        local = moment.astimezone(tz)
        hours[(local.year, local.month, local.day, local.hour)].append(value)
    # The deployment's GPUs, and the days they cover, are those reporting framebuffer use:
    # every GPU and MIG instance does, while DCGM exports no GPU_UTIL for a MIG instance
    # (its GPUs would be none, and nothing ever proposed). Utilisation, where there is
    # some, is read for the same GPUs: one metric per GPU (core.utilisation.choose). The
    # days are the steps that hold a sample, not the span from the first to the last: an
    # exporter outage or a gap in the window is no evidence.
    covered = rightsize.days_with_samples(
        (moment.timestamp() for series in used_series for moment, _ in series.points),
        STEP_SECONDS)
    keys = sorted(used)
    chosen = utilisation.choose(keys, util, engine,
                                mig_instances={key for key in keys if key[2]})
    return rightsize.evidence_from(
        util=list(chosen.series), util_metrics=chosen.metrics,
        memory_used=[used[k] for k in keys],
        memory_free=[free.get(k, {}) for k in keys],
        gpus=max(deployment.spec.resources.gpu.count, 1), days=covered,
        rates_by_hour=[values for _, values in sorted(hours.items())],
        pods=[pod for pod, _gpu, _instance in keys])


def report(settings: Settings, deployment: ModelDeployment, target: EnvironmentTarget,
           metrics: MetricsSource, *, now: datetime, days: int,
           tags: Mapping[str, str] | None = None,
           claimed: Mapping[str, int] | None = None) -> Report:
    """The proposals, judged with ``claimed`` (the GPUs the team's other deployments claim
    here; default: counted as the pipeline counts them, policy_check.claimed_by_others)."""
    spec = deployment.spec
    capacity = float(spec.scaling.target) if spec.scaling.metric == "rps" \
        else settings.forecast.requests_per_replica
    # The runtime descriptors are read from the templates once per report.
    telemetry = telemetry_of(descriptor_of(settings, deployment))
    found = evidence(settings, deployment, target, metrics, telemetry, now=now, days=days)
    reserves = telemetry.reserves_gpu_memory
    current = rightsize.Current(spec.scaling.min_replicas, spec.resources.gpu.count,
                                spec.resources.gpu.mig, capacity, memory_is_evidence=not reserves)
    rules = rightsize.Rules(mig_profiles=tuple(target.mig_profiles or ()))
    proposals = tuple(rightsize.propose(current, found, rules))
    decision = None
    if proposals:
        if claimed is None:
            claimed = claimed_by_others(settings, settings.pipeline_config(), target.name,
                                        deployment)
        decision = policy_verdict(settings, target, apply(deployment, proposals), tags or {},
                                  now, claimed)
    return Report(deployment, target.name, found, proposals,
                  gpu_hour_price(settings, spec.resources.gpu.type),
                  settings.telemetry.currency, decision, memory_is_evidence=not reserves)


def overrides(proposals: tuple[rightsize.Proposal, ...]) -> dict[str, Any]:
    """The intent overrides (spec.environments.<env>) that carry the proposals."""
    spec: dict[str, Any] = {}
    for proposal in proposals:
        if proposal.kind == "min-replicas":
            spec = deep_merge(spec, {"scaling": {"minReplicas": int(proposal.proposed)}})
        elif proposal.kind == "mig":
            spec = deep_merge(spec, {"resources": {"gpu": {"mig": proposal.proposed}}})
        elif proposal.kind == "gpus":
            spec = deep_merge(spec, {"resources": {"gpu": {"count": int(proposal.proposed)}}})
    return spec


def apply(deployment: ModelDeployment, proposals: tuple[rightsize.Proposal, ...]
          ) -> ModelDeployment:
    document = deployment.model_dump(mode="json", by_alias=True)
    document["spec"] = deep_merge(document["spec"], overrides(proposals))
    return ModelDeployment.model_validate(document)


def propose(settings: Settings, report_: Report, intent: Mapping[str, Any],
            provider: GitProvider) -> ProposalResult | None:
    """Re-render the overlay with the right-sized intent; one MR on rightsize/<name>/<env>.

    Everything else the live overlay holds (the signed artifact, lineage, an accepted KEDA
    ScaledObject) is carried forward by rendering.proposal_overlay; the overlay is managed
    whole, so a file the new render no longer has (an HPA patch KEDA replaced) goes away.
    """
    from promoter import rendering

    if not report_.proposals:
        return None
    if report_.decision is not None and not report_.decision.allowed:
        raise PolicyDenied(report_.decision.reasons)
    env, name = report_.env, report_.deployment.name
    spec = dict(intent.get("spec") or {})
    environments = dict(spec.get("environments") or {})
    environments[env] = deep_merge(environments.get(env) or {}, overrides(report_.proposals))
    changed = {**intent, "spec": {**spec, "environments": environments}}
    files: dict[str, str | None] = dict(rendering.proposal_overlay(
        settings, provider, changed, report_.deployment, env, origin="right-sized intent"))
    root = settings.git.manifests_dir.strip("/")
    return provider.propose(Proposal(
        model=report_.deployment.spec.model.name, name=name, env=env,
        version=report_.deployment.spec.model.version, files=files,
        managed_prefixes=(f"{root}/{name}/overlays/{env}/",),
        title=f"Right-size {name} in {env}: {', '.join(p.kind for p in report_.proposals)}",
        description=description(report_), labels=("promoter", "rightsize"),
        approvals_required=settings.environment(env).approvals,
        target_branch=settings.git.target_branch,
        branch_name=f"{RIGHTSIZE_BRANCH_PREFIX}/{name}/{env}"))


def description(report_: Report) -> str:
    lines = ["## Right-sizing from GPU telemetry", "",
             f"Evidence: {report_.evidence.days:.1f} days of DCGM exporter samples (utilisation: "
             f"{utilisation.describe(report_.evidence.util_metrics)}) and request rate.", "",
             "| change | now | proposed | evidence | saving / month |",
             "|---|---|---|---|---:|"]
    for p in report_.proposals:
        lines.append(f"| `{p.field}` | {p.current} | {p.proposed} | {p.evidence} | "
                     f"{saving_text(report_, p)} |")
    lines += ["", "Keep the change by setting the same fields in the model's intent "
              f"(`spec.environments.{report_.env}`): the next promotion renders from the intent.",
              ""]
    return "\n".join(lines)


def saving_text(report_: Report, proposal: rightsize.Proposal) -> str:
    hours = f"{proposal.gpu_hours_saved_month:,.0f} GPU-h"
    if report_.price_per_gpu_hour is None:
        return hours
    money = proposal.gpu_hours_saved_month * report_.price_per_gpu_hour
    return f"{hours} ≈ {money:,.0f} {report_.currency}"


# --- cost -------------------------------------------------------------------------------------



@dataclass(frozen=True)
class CostRow:
    key: str
    gpu_hours: float
    cost: float | None


def cost(settings: Settings, metrics: MetricsSource, *, by: str, start: datetime,
         end: datetime) -> list[CostRow]:
    """GPU-hours (and cost) per team, model or environment between ``start`` and ``end``.

    Every DCGM GPU series (framebuffer used) that belongs to a pod counts one GPU for each
    step of the period a sample of it closes, a MIG instance its share (``GPU_I_PROFILE``: g
    of 7 slices); the
    model is the pod's deployment name, the environment the namespace's, the team the pod's
    cost label as kube-state-metrics exports it (``kube_pod_labels``).
    """
    if end <= start:
        raise UserError("the cost period is empty")
    # Whole seconds: the query sends its times rounded to the millisecond, and a sample at a
    # start rounded up would count as one after it.
    start, end = start.replace(microsecond=0), end.replace(microsecond=0)
    # Framebuffer use, not utilisation: DCGM reports no GPU_UTIL for MIG instances, and a MIG
    # instance (GPU_I_PROFILE label) counts its share of a GPU, not a whole one.
    # query_range returns both ends: N steps, N + 1 samples. A sample counts for the step it
    # closes (count by() sees the series scraped in the lookback before it), so the one at
    # ``start`` belongs to the period before, and adjacent periods add up exactly.
    # Only GPUs a pod holds (pod!=""): dcgm-exporter also reports the idle ones, without a
    # pod, which no team, model or environment spends.
    # One series per device (max by its identity) before counting: an exporter restart or a
    # driver upgrade gives the same GPU new labels (instance, DCGM_FI_DRIVER_VERSION), and
    # for the lookback after it, old and new series both answer; counted as is, the GPU
    # would be charged twice for that time.
    device = f"namespace, pod, gpu, {MIG_INSTANCE}, modelName, {MIG_LABEL}"
    series = metrics.query_range(
        f'count by (namespace, pod, modelName, {MIG_LABEL}) '
        f'(max by ({device}) ({FB_USED}{{pod!=""}}))', start, end, STEP_SECONDS)
    teams = _teams(settings, metrics, start, end) if by == "team" else {}
    envs = {env.namespace: name for name, env in settings.environments.items()}
    hours: dict[str, float] = defaultdict(float)
    prices: dict[str, float | None] = {}
    spent: dict[str, float] = defaultdict(float)
    priced: dict[str, bool] = defaultdict(lambda: True)
    for item in series:
        namespace, pod = item.labels.get("namespace", ""), item.labels.get("pod", "")
        gpu_type = item.labels.get("modelName", "").replace(" ", "-")
        model = deployment_of_pod(pod) or "unknown"
        key = {"model": model, "env": envs.get(namespace, namespace or "unknown"),
               "team": teams.get((namespace, pod), "unknown")}[by]
        used = sum(value for moment, value in item.points if moment > start) \
            * STEP_SECONDS / 3600 * _gpu_share(item.labels.get(MIG_LABEL, ""))
        hours[key] += used
        prices[gpu_type] = prices.get(gpu_type, gpu_hour_price(settings, gpu_type))
        if prices[gpu_type] is None:
            priced[key] = False
        else:
            spent[key] += used * (prices[gpu_type] or 0)
    return [CostRow(key, hours[key], spent[key] if priced[key] else None)
            for key in sorted(hours)]


def _gpu_share(mig_profile: str) -> float:
    """The share of a GPU one DCGM series stands for: a MIG instance its slices of seven."""
    try:
        return rightsize.gpu_share(mig_profile)
    except ValueError:
        return 1.0   # a profile name promoter cannot read: counted whole rather than lost


def _teams(settings: Settings, metrics: MetricsSource, start: datetime,
           end: datetime) -> dict[tuple[str, str], str]:
    label = "label_" + re.sub(r"[^A-Za-z0-9_]", "_", settings.cost_labels.get("team", "team"))
    found: dict[tuple[str, str], str] = {}
    # Over each hourly step's whole hour, not at its instant: a pod that lived between two
    # steps (a burst replica scaled up for half an hour) is seen only through the window.
    for item in metrics.query_range(
            f"max by (namespace, pod, {label}) (max_over_time(kube_pod_labels[1h]))",
            start, end, 3600):
        if item.labels.get(label):
            found[(item.labels.get("namespace", ""), item.labels.get("pod", ""))] = \
                item.labels[label]
    return found
