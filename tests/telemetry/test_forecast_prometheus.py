"""`promoter forecast` against a real Prometheus serving four backfilled weeks of vLLM traffic.

History: tests.telemetry.traces (daily + weekly seasonality, noise, bursts, a holiday),
written as OpenMetrics, backfilled with promtool and served by Debian's prometheus on
127.0.0.1. promoter reads it over the HTTP API exactly as it would in production.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import subprocess
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from ruamel.yaml import YAML

from promoter import forecasting
from promoter.adapters import kustomize, schemas
from promoter.adapters.prometheus import PrometheusSource
from promoter.core import forecast as model
from promoter.errors import TransientError
from promoter.forecast_plot import HEIGHT_PX, PNG_SIGNATURE, WIDTH_PX
from promoter.settings import load_settings
from tests.conftest import requires_kubectl
from tests.telemetry import traces
from tests.telemetry.prometheus_server import available, prometheus

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(available() is not None, reason=available() or "")]

NAMESPACE, NAME = "models-production", "llm-chat"
TRAIN_END = traces.START + timedelta(weeks=3)        # Monday 00:00 Europe/Berlin
HELD_OUT_WAPE = 0.15                                  # the stated error on the held-out week
INTENT = """\
apiVersion: promoter.dev/v1alpha1
kind: ModelDeployment
metadata: {name: llm-chat}
spec:
  model: {name: llm-chat-8b, version: "3"}
  owner: {team: assistants, costCenter: cc-1}
  runtime: vllm
  serving: {platform: kubernetes}
  resources: {cpu: "8", memory: 64Gi, gpu: {count: 1, type: NVIDIA-L40S}}
  scaling: {minReplicas: 1, maxReplicas: 12, metric: cpu, target: 70}
"""


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory):
    trace = traces.generate(weeks=4)
    text = traces.openmetrics(trace, namespace=NAMESPACE, pod=f"{NAME}-5f7c9d-x2k4q")
    text = text.replace("# EOF\n", _cold_starts(trace) + "# EOF\n")
    with prometheus(text, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


COLD_STARTS = (600, 780, 840)       # seconds from pod created to Ready, three pods
FLAP_AFTER = 5 * 3600               # the third pod goes unready and back this long after
OTHER_MODEL_START = 3000            # llm-chat-70b: another model sharing the name's prefix


def _cold_starts(trace: traces.Trace) -> str:
    """kube-state-metrics' pod created / Ready timestamps, hourly, for three pods of llm-chat
    (the third one's readiness flaps halfway: its Ready condition's last transition moves)
    and one pod of llm-chat-70b, whose slow start must not count for llm-chat."""
    created, ready = [], []
    first = int(trace.times[0].timestamp())
    pods = [(f"{NAME}-5f7c9d-{'abc'[index]}2k4q", startup)
            for index, startup in enumerate(COLD_STARTS)]
    pods.append((f"{NAME}-70b-5f7c9d-d2k4q", OTHER_MODEL_START))
    samples = trace.times[::12]
    for index, (pod, startup) in enumerate(pods):
        labels = f'namespace="{NAMESPACE}",pod="{pod}"'
        for number, moment in enumerate(samples):
            stamp = int(moment.timestamp())
            flapped = index == 2 and number > len(samples) // 2
            became_ready = first + index + (FLAP_AFTER if flapped else startup)
            created.append(f"kube_pod_created{{{labels}}} {first + index} {stamp}")
            ready.append(f"kube_pod_status_ready_time{{{labels}}} {became_ready} {stamp}")
    return "\n".join(created + ready) + "\n"


def _config(tmp_path: Path, url: str, **extra: str) -> Path:
    quota = extra.get("quota", "64")
    lead = f", lead_time_seconds: {extra['lead']}" if "lead" in extra else ""
    gpu_types = extra.get("gpu_types", "[NVIDIA-L40S]")
    config = tmp_path / "promoter.yaml"
    config.write_text(f"""\
state_dir: {tmp_path / "state"}
prometheus: {{url: "{url}"}}
forecast: {{timezone: {traces.TZ_NAME}, history_days: 21, requests_per_replica: 8{lead}}}
telemetry: {{gpu_hour_prices: {{NVIDIA-L40S: 1.9}}}}
policy: {{team_gpu_quota: {{assistants: {quota}}}, teams: {{assistants: {{}}}}}}
environments:
  production:
    trigger: {{alias: production}}
    namespace: {NAMESPACE}
    allowed_gpu_types: {gpu_types}
""", encoding="utf-8")
    (tmp_path / "intent.yaml").write_text(INTENT, encoding="utf-8")
    return config


def _forecast_json(run_cli, config: Path, *extra: str) -> dict:
    code, out, err = run_cli("forecast", "--intent", str(config.parent / "intent.yaml"),
                             "--env", "production", "--config", str(config),
                             "--until", TRAIN_END.isoformat(), "--output", "json", *extra)
    assert code == 0, err
    return json.loads(out)


def _accept(settings, intent: dict, plan: forecasting.ForecastPlan, tree: Path) -> None:
    """Write the overlay a merged `promoter forecast --propose` MR leaves into ``tree``: the
    overlay re-rendered with the plan's ScaledObject as its accepted scaling."""
    from dataclasses import replace

    from promoter import rendering

    request = replace(rendering.build_request(settings, intent, "production", origin="intent"),
                      accepted_scaling=forecasting.scaled_object_text(plan))
    rendering.write_tree(tree, {path: text for path, text in
                                rendering.renderer(settings).render(request).items()
                                if "/overlays/" in path})


def test_dry_run_prints_a_valid_scaled_object_that_prewarms_before_each_rise(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    result = _forecast_json(run_cli, _config(tmp_path, prometheus_url))
    scaled = result["scaled_object"]
    assert schemas.problems(scaled) == []
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": NAME}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 12)
    crons = [t for t in spec["triggers"] if t["type"] == "cron"]
    assert crons, "a weekday peak of ~60 req/s at 8 req/s per replica needs pre-warming"
    lead = result["lead_minutes"]
    # Measured: the slowest pod took 840 s from created to Ready (kube-state-metrics).
    assert (lead, result["lead_source"]) == (14, "measured")
    for trigger in crons:
        meta = trigger["metadata"]
        assert meta["timezone"] == "Europe/Berlin"
        minute, hour = (int(x) for x in meta["start"].split()[:2])
        # Forecast rises fall on the hour; each window opens one lead time earlier.
        assert minute == 60 - lead and 0 <= hour < 24
        assert int(meta["desiredReplicas"]) <= 12
    # Weekday mornings ramp up before 10:30 local time; weekends stay far lower.
    weekday_peak = max(int(t["metadata"]["desiredReplicas"]) for t in crons
                       if set(t["metadata"]["start"].split()[4].split(",")) & {"1", "2"})
    assert weekday_peak >= 7
    sunday_only = [int(t["metadata"]["desiredReplicas"]) for t in crons
                   if t["metadata"]["start"].split()[4] == "0"]
    assert all(r <= 4 for r in sunday_only)
    reactive = [t for t in spec["triggers"] if t["type"] == "prometheus"]
    assert {t["name"] for t in reactive} == {"request-rate", "queue"}
    assert reactive[0]["metadata"]["serverAddress"] == prometheus_url   # no cluster_url set
    assert f'namespace="{NAMESPACE}"' in reactive[0]["metadata"]["query"]
    assert "[2m]" in reactive[0]["metadata"]["query"]
    assert result["gpu_hours_week"] < 0.7 * result["static_gpu_hours_week"]


def test_text_dry_run_shows_the_object_and_a_summary(run_cli, tmp_path: Path,
                                                     prometheus_url: str) -> None:
    config = _config(tmp_path, prometheus_url)
    code, out, err = run_cli("forecast", "--intent", str(tmp_path / "intent.yaml"), "--env",
                             "production", "--config", str(config),
                             "--until", TRAIN_END.isoformat())
    assert code == 0, err
    assert "kind: ScaledObject" in out
    assert re.search(r"^Wed\s+\d+(\.\d)?\s+\d+\s+[\d.]+$", out, re.M)
    assert "cost/week:" in out and "dry run: nothing proposed" in out


def test_a_configured_lead_time_wins_over_the_measured_one(run_cli, tmp_path: Path,
                                                           prometheus_url: str) -> None:
    config = _config(tmp_path, prometheus_url, lead="1500")
    config.write_text(config.read_text().replace(
        f'prometheus: {{url: "{prometheus_url}"}}',
        f'prometheus: {{url: "{prometheus_url}", cluster_url: "http://prometheus.monitoring:9090"}}'))
    result = _forecast_json(run_cli, config)
    assert {t["metadata"]["serverAddress"] for t in result["scaled_object"]["spec"]["triggers"]
            if t["type"] == "prometheus"} == {"http://prometheus.monitoring:9090"}
    assert (result["lead_minutes"], result["lead_source"]) == (25, "configured")
    starts = [t["metadata"]["start"] for t in result["scaled_object"]["spec"]["triggers"]
              if t["type"] == "cron"]
    assert starts and all(start.startswith("35 ") for start in starts)


def test_credentials_in_prometheus_url_never_reach_the_scaled_object(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    """The prometheus triggers' serverAddress is committed to the GitOps repository: a
    prometheus.url with a password (or token) is refused as its default, naming
    prometheus.cluster_url; with a credential-free cluster_url the forecast goes on, reading
    through the credentialed url (KEDA authenticates by a TriggerAuthentication instead)."""
    secret = "PromS3cretPass"
    url = prometheus_url.replace("://", f"://promuser:{secret}@", 1)
    config = _config(tmp_path, url)
    code, out, err = run_cli("forecast", "--intent", str(tmp_path / "intent.yaml"),
                             "--env", "production", "--config", str(config),
                             "--until", TRAIN_END.isoformat(), "--output", "json")
    assert code != 0
    assert "prometheus.cluster_url" in err
    assert secret not in out + err

    config.write_text(config.read_text().replace(
        f'prometheus: {{url: "{url}"}}',
        f'prometheus: {{url: "{url}", cluster_url: "http://prometheus.monitoring:9090"}}'))
    result = _forecast_json(run_cli, config)
    assert secret not in json.dumps(result)
    assert {t["metadata"]["serverAddress"] for t in result["scaled_object"]["spec"]["triggers"]
            if t["type"] == "prometheus"} == {"http://prometheus.monitoring:9090"}


def test_max_replicas_are_bounded_by_the_team_gpu_quota(run_cli, tmp_path: Path,
                                                         prometheus_url: str) -> None:
    result = _forecast_json(run_cli, _config(tmp_path, prometheus_url, quota="5"))
    spec = result["scaled_object"]["spec"]
    assert spec["maxReplicaCount"] == 5
    assert all(int(t["metadata"]["desiredReplicas"]) <= 5
               for t in spec["triggers"] if t["type"] == "cron")


def test_max_replicas_are_bounded_by_what_the_teams_other_deployments_leave(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    """Another assistants model on the target branch claims 3 of the quota's 5 GPUs: the
    pipeline would deny llm-chat at more than 2 replicas, and the forecast bounded it by the
    whole quota (5), proposing a schedule the pipeline and the CI gate refuse."""
    from promoter import rendering
    from promoter.service import composition

    config = _config(tmp_path, prometheus_url, quota="5")
    settings = load_settings(config, environ={})
    other = YAML(typ="safe").load(INTENT)
    other["metadata"]["name"] = "other-chat"
    other["spec"]["model"]["name"] = "other-chat"
    other["spec"]["scaling"]["maxReplicas"] = 3
    request = rendering.build_request(settings, other, "production", origin="other")
    _merge_seed(composition.provider(settings), {
        f"manifests/{path}": text
        for path, text in rendering.renderer(settings).render(request).items()})
    result = _forecast_json(run_cli, config)
    spec = result["scaled_object"]["spec"]
    assert spec["maxReplicaCount"] == 2
    assert result["policy"] == []


def test_the_committed_overlay_carries_the_quota_lowered_max_replicas(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    """Quota 5, intent maxReplicas 12: the plan and the verdict said 5, but the MR's overlay
    was rendered from the intent and bounded the ScaledObject (and the GPU claim) at 12, past
    the quota the policy was held to. The committed files now carry 5, and so does the next
    promotion of the intent the MR asks for; the intent as it was is denied, not re-raised."""
    from dataclasses import replace

    from promoter import rendering
    from promoter.core import tree_facts
    from promoter.service import composition

    config = _config(tmp_path, prometheus_url, quota="5")
    settings = load_settings(config, environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    provider = composition.provider(settings)
    intent = YAML(typ="safe").load(INTENT)
    request = rendering.build_request(settings, intent, "production", origin="intent")
    _merge_seed(provider, {f"manifests/{path}": text
                           for path, text in rendering.renderer(settings).render(request).items()})

    result = _forecast_json(run_cli, config, "--propose")
    assert result["scaled_object"]["spec"]["maxReplicaCount"] == 5
    assert result["policy"] == []
    branch, overlay = f"scale/{NAME}/production", f"manifests/{NAME}/overlays/production"
    committed = provider.read(f"{overlay}/scaledobject.yaml", branch) or ""
    scaled = YAML(typ="safe").load(committed)
    assert scaled["spec"]["maxReplicaCount"] == 5
    assert all(int(t["metadata"]["desiredReplicas"]) <= 5
               for t in scaled["spec"]["triggers"] if t["type"] == "cron")
    kustomization = provider.read(f"{overlay}/kustomization.yaml", branch) or ""
    assert tree_facts.annotation(kustomization, tree_facts.GPU_CLAIM) == "5"
    mr = next(mr for mr in provider.list_mrs()  # type: ignore[attr-defined]
              if mr.source_branch == branch)
    assert "replicas 1..5" in mr.description
    assert "spec.environments.production.scaling.maxReplicas" in mr.description

    # The next promotion renders from the intent: with the override the MR asks for, it
    # carries 5 forward; the intent as it was claims 12 GPUs, which the quota denies.
    kept = YAML(typ="safe").load(INTENT)
    kept["spec"]["environments"] = {"production": {"scaling": {"maxReplicas": 5}}}
    kept["spec"]["model"]["version"] = "4"
    promoted = rendering.renderer(settings).render(replace(
        rendering.build_request(settings, kept, "production", origin="intent"),
        accepted_scaling=committed))
    assert YAML(typ="safe").load(promoted[f"{NAME}/overlays/production/scaledobject.yaml"]
                                 )["spec"]["maxReplicaCount"] == 5
    deployment, target = forecasting.resolve(settings, intent, "production", "intent")
    denied = forecasting.policy_verdict(settings, target, deployment, {}, TRAIN_END, {})
    assert not denied.allowed


def test_a_proposal_that_breaks_a_guardrail_is_not_opened(run_cli, tmp_path: Path,
                                                          prometheus_url: str) -> None:
    config = _config(tmp_path, prometheus_url, gpu_types="[NVIDIA-H100-80GB-HBM3]")
    code, _out, err = run_cli("forecast", "--intent", str(tmp_path / "intent.yaml"), "--env",
                              "production", "--config", str(config), "--propose",
                              "--until", TRAIN_END.isoformat())
    assert code == 4
    assert "NVIDIA-L40S is not allowed in production" in err


def test_a_deployments_pods_are_its_own_not_every_pod_sharing_its_prefix(
        prometheus_url: str) -> None:
    """pods_pattern, as Prometheus matches it: llm-chat's ReplicaSet pods, not llm-chat-70b's
    (``llm-chat-.*`` took both), and not ``llm``'s."""
    from promoter.core.naming import pods_pattern

    source = PrometheusSource(prometheus_url)

    def pods(name: str) -> set[str]:
        query = f'kube_pod_created{{namespace="{NAMESPACE}",pod=~"{pods_pattern(name)}"}}'
        return {item.labels["pod"] for item in source.query_range(
            query, TRAIN_END - timedelta(hours=2), TRAIN_END, 3600)}

    assert pods(NAME) == {f"{NAME}-5f7c9d-{x}2k4q" for x in "abc"}
    assert pods(f"{NAME}-70b") == {f"{NAME}-70b-5f7c9d-d2k4q"}
    assert pods("llm") == set()


def test_a_token_parameter_in_prometheus_url_rides_along_with_every_query(
        prometheus_url: str) -> None:
    """prometheus.url of a Prometheus behind a proxy that checks ``?token=``: the API path goes
    after the URL's path and the token stays in the query (it was appended after the query, so
    Prometheus got ``/`` and answered 404)."""
    source = PrometheusSource(f"{prometheus_url}/?token=t0k")
    series = source.query_range(f'kube_pod_created{{namespace="{NAMESPACE}"}}',
                                TRAIN_END - timedelta(hours=2), TRAIN_END, 3600)
    assert {item.labels["pod"] for item in series} >= {f"{NAME}-5f7c9d-a2k4q"}
    seen: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"status": "success",
                                         "data": {"resultType": "matrix", "result": []}})

    proxied = PrometheusSource("https://proxy.example/prom/?token=t0k",
                               client=httpx.Client(transport=httpx.MockTransport(answer)))
    proxied.query_range("up", TRAIN_END - timedelta(hours=1), TRAIN_END, 60)
    assert seen[0].path == "/prom/api/v1/query_range"
    assert seen[0].params["token"] == "t0k" and seen[0].params["query"] == "up"


def test_forecast_of_the_held_out_week_is_within_the_stated_error(
        tmp_path: Path, prometheus_url: str) -> None:
    settings = load_settings(_config(tmp_path, prometheus_url), environ={})
    deployment, target = forecasting.resolve(
        settings, YAML(typ="safe").load(INTENT), "production", "intent")
    source = PrometheusSource(prometheus_url)
    plan = forecasting.plan(settings, deployment, target, source, now=TRAIN_END)
    query = ('sum(rate(vllm:request_success_total{namespace="models-production",'
             'pod=~"llm-chat-[a-z0-9]+-[a-z0-9]{5}"}[15m]))')
    actual = source.query_range(query, TRAIN_END + timedelta(minutes=15),
                                TRAIN_END + timedelta(weeks=1), 900)[0].points
    assert len(actual) > 600           # the whole held-out week came back from Prometheus
    tz = ZoneInfo(traces.TZ_NAME)
    predicted = model.predict(plan.fitted, [moment for moment, _ in actual], tz)
    error = model.wape([value for _, value in actual], predicted)
    assert error < HELD_OUT_WAPE, f"held-out WAPE {error:.3f}"


def test_a_mig_slice_counts_its_share_of_a_gpu_not_a_whole_one(tmp_path: Path,
                                                                prometheus_url: str) -> None:
    """A 1g.10gb slice is 1/7 of a GPU, as `promoter cost` counts it: before, the plan's
    GPU-hours (scheduled, static, per weekday), its cost per week and the MR's saving counted
    it as a whole GPU, seven times too high."""
    settings = load_settings(_config(tmp_path, prometheus_url, lead="600"), environ={})
    source = PrometheusSource(prometheus_url)

    def plan(gpu: dict[str, Any]) -> forecasting.ForecastPlan:
        intent = YAML(typ="safe").load(INTENT)
        intent["spec"]["resources"]["gpu"] = gpu
        deployment, target = forecasting.resolve(settings, intent, "production", "intent")
        return forecasting.plan(settings, deployment, target, source, now=TRAIN_END)

    whole = plan({"count": 1, "type": "NVIDIA-L40S"})
    sliced = plan({"count": 1, "type": "NVIDIA-L40S", "mig": "1g.10gb"})
    assert sliced.windows == whole.windows and whole.gpu_hours_week > 0
    assert sliced.gpu_hours_week == pytest.approx(whole.gpu_hours_week / 7)
    assert sliced.static_gpu_hours_week == pytest.approx(whole.static_gpu_hours_week / 7)
    assert sum(row["gpu_hours"] for row in forecasting.summary_rows(sliced)) == \
        pytest.approx(sum(row["gpu_hours"] for row in forecasting.summary_rows(whole)) / 7,
                      abs=0.5)
    saving = whole.static_gpu_hours_week - whole.gpu_hours_week
    assert f"({saving / 7:.0f} fewer)" in forecasting.description(sliced, "plot.png")


def test_an_answer_with_warnings_is_refused_not_read_as_the_whole_history() -> None:
    """Thanos (or Prometheus over remote read) answers 200 "success" with what it could read
    and "warnings" naming a store that did not answer: forecast, rightsize and cost would size
    from the partial history. Refused as transient, quoting the warnings (capped, no userinfo);
    ``partial_response=false`` asks Thanos to fail instead (Prometheus ignores it)."""
    sent: list[dict[str, str]] = []
    store = "partial response: store 10.0.0.3:10901 unreachable"

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(dict(request.url.params))
        return httpx.Response(200, json={
            "status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": {}, "values": [[1_700_000_000, "1"]]}]},
            "warnings": [store, "remote read from http://reader:s3cret@store:9090 failed",
                         "x" * 5_000]})

    source = PrometheusSource("http://prom",
                              client=httpx.Client(transport=httpx.MockTransport(answer)))
    start = datetime.fromtimestamp(1_700_000_000 - 60, UTC)
    with pytest.raises(TransientError, match=re.escape(store)) as raised:
        source.query_range("up", start, start + timedelta(minutes=2), 60)
    assert "s3cret" not in str(raised.value)
    assert len(str(raised.value)) < 1_000
    assert sent[0]["partial_response"] == "false"


@pytest.mark.parametrize(("url", "credential"), [
    ("https://promuser:PromS3cret@prom.example:9090", "PromS3cret"),
    ("https://PromT0kenUser@prom.example:9090", "PromT0kenUser"),
    ("https://prom.example:9090/?token=PromT0ken", "PromT0ken"),
    ("https://prom.example:9090/?x=1&access_token=PromT0ken", "PromT0ken")])
@pytest.mark.parametrize("failure", ["unreachable", "5xx", "warnings"])
def test_errors_name_prometheus_without_the_credentials_in_its_url(
        url: str, credential: str, failure: str) -> None:
    """prometheus.url may carry a password (``user:pw@``) or a token parameter; the error
    (a log line, a job reason) names the host and masks both."""
    def answer(request: httpx.Request) -> httpx.Response:
        if failure == "unreachable":
            raise httpx.ConnectError("refused", request=request)
        if failure == "5xx":
            return httpx.Response(503, json={"error": "down"})
        return httpx.Response(200, json={
            "status": "success", "data": {"resultType": "matrix", "result": []},
            "warnings": ["store 10.0.0.3:10901 unreachable"]})

    source = PrometheusSource(url, client=httpx.Client(transport=httpx.MockTransport(answer)))
    start = datetime.fromtimestamp(1_700_000_000, UTC)
    with pytest.raises(TransientError) as raised:
        source.query_range("up", start, start + timedelta(minutes=2), 60)
    assert credential not in str(raised.value)
    assert "prom.example:9090" in str(raised.value)


@requires_kubectl
def test_scaled_object_builds_in_the_overlay_and_replaces_the_hpa(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    config = _config(tmp_path, prometheus_url)
    code, _out, err = run_cli("render", "--intent", str(tmp_path / "intent.yaml"), "--env",
                              "production", "--config", str(config), "--out",
                              str(tmp_path / "tree"))
    assert code == 0, err
    overlay = tmp_path / "tree" / NAME / "overlays" / "production"
    settings = load_settings(config, environ={})
    deployment, target = forecasting.resolve(
        settings, YAML(typ="safe").load(INTENT), "production", "intent")
    plan = forecasting.plan(settings, deployment, target, PrometheusSource(prometheus_url),
                            now=TRAIN_END)
    _accept(settings, YAML(typ="safe").load(INTENT), plan, tmp_path / "tree")
    built = list(YAML(typ="safe").load_all(kustomize.build(overlay)))
    kinds = [doc["kind"] for doc in built]
    assert "HorizontalPodAutoscaler" not in kinds   # KEDA owns the HPA now
    scaled = next(doc for doc in built if doc["kind"] == "ScaledObject")
    assert scaled["metadata"]["namespace"] == NAMESPACE
    assert schemas.problems(scaled) == []
    assert any(doc["kind"] == "Deployment" and doc["metadata"]["name"] == NAME for doc in built)


@requires_kubectl
@pytest.mark.parametrize("platform", ["kubernetes", "kserve"])
def test_the_next_promotion_renders_the_overlay_the_scale_mr_left(
        run_cli, tmp_path: Path, prometheus_url: str, platform: str) -> None:
    """After a scale MR merges, a new version re-renders the overlay: the renderer carries the
    accepted ScaledObject forward, so the cluster gets the same objects with the new version."""
    from dataclasses import replace

    from promoter import rendering

    config = _config(tmp_path, prometheus_url)
    settings = load_settings(config, environ={})
    intent = YAML(typ="safe").load(INTENT.replace(
        "serving: {platform: kubernetes}", f"serving: {{platform: {platform}}}"))
    render = rendering.renderer(settings)
    merged = tmp_path / "merged"
    for path, text in render.render(rendering.build_request(
            settings, intent, "production", origin="intent")).items():
        (merged / path).parent.mkdir(parents=True, exist_ok=True)
        (merged / path).write_text(text, encoding="utf-8")
    overlay = merged / NAME / "overlays" / "production"
    deployment, target = forecasting.resolve(settings, intent, "production", "intent")
    plan = forecasting.plan(settings, deployment, target, PrometheusSource(prometheus_url),
                            now=TRAIN_END)
    _accept(settings, intent, plan, merged)
    accepted = (overlay / "scaledobject.yaml").read_text()

    intent["spec"]["model"]["version"] = "4"
    promoted = tmp_path / "promoted"
    request = replace(rendering.build_request(settings, intent, "production", origin="intent"),
                      accepted_scaling=accepted)
    for path, text in render.render(request).items():
        (promoted / path).parent.mkdir(parents=True, exist_ok=True)
        (promoted / path).write_text(text, encoding="utf-8")

    def objects(tree: Path) -> list[dict]:
        built = kustomize.build(tree / NAME / "overlays" / "production")
        return [doc for doc in YAML(typ="safe").load_all(built.replace('"4"', '"3"'))]

    after = objects(promoted)
    assert after == objects(merged)   # the version's labels aside, nothing else moved
    kinds = [doc["kind"] for doc in after]
    assert "ScaledObject" in kinds and "HorizontalPodAutoscaler" not in kinds


def test_propose_opens_one_mr_on_the_scale_branch_and_is_idempotent(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    from promoter import rendering
    from promoter.service import composition

    config = _config(tmp_path, prometheus_url)
    settings = load_settings(config, environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    provider = composition.provider(settings)
    request = rendering.build_request(settings, YAML(typ="safe").load(INTENT), "production",
                                      origin="intent")
    tree = {f"manifests/{path}": text
            for path, text in rendering.renderer(settings).render(request).items()}
    svg = f"manifests/{NAME}/overlays/production/forecast.svg"   # an earlier release's plot
    tree[svg] = "<svg/>\n"
    _merge_seed(provider, tree)

    result = _forecast_json(run_cli, config, "--propose")
    assert result["outcome"] == "created"
    branch = f"scale/{NAME}/production"
    overlay = f"manifests/{NAME}/overlays/production"
    scaled = YAML(typ="safe").load(provider.read(f"{overlay}/scaledobject.yaml", branch))
    assert scaled == result["scaled_object"]
    kustomization = provider.read(f"{overlay}/kustomization.yaml", branch) or ""
    assert "scaledobject.yaml" in kustomization
    assert "patch-horizontalpodautoscaler.yaml" not in kustomization
    plot_path = f"manifests/{NAME}/forecast-production.png"
    assert result["plot"] == plot_path
    plot = provider.forge.read_files(branch, [plot_path], [])[plot_path]  # type: ignore
    _assert_plot_png(plot)
    # Beside the overlay, not in it: the next promotion's re-render leaves it alone.
    assert not any(path.endswith((".png", ".svg"))
                   for path in provider.files(f"{overlay}/", branch))
    assert provider.read(svg, "main") and provider.read(svg, branch) is None   # replaced
    commits = _commits(tmp_path / "state" / "gitops.git", branch)
    mrs = [mr for mr in provider.list_mrs() if mr.source_branch == branch]  # type: ignore
    assert len(mrs) == 1
    assert "Expected GPU-hours per week" in mrs[0].description
    assert "| Wed |" in mrs[0].description
    assert f"]({plot_path})" in mrs[0].description      # the plot, as an image link
    # Untouched: the rest of the tree (the Deployment patch) is not part of this change.
    assert provider.read(f"{overlay}/patch-deployment.yaml", branch) == \
        tree[f"{overlay}/patch-deployment.yaml"]

    again = _forecast_json(run_cli, config, "--propose")
    assert again["outcome"] == "unchanged"
    assert len([mr for mr in provider.list_mrs()  # type: ignore[attr-defined]
                if mr.source_branch == branch]) == 1
    assert _commits(tmp_path / "state" / "gitops.git", branch) == commits   # no new commit
    assert provider.forge.read_files(branch, [plot_path], [])[plot_path] == plot  # type: ignore


def test_propose_keeps_what_the_promoted_overlay_pins_readable(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    """On an overlay a promotion rendered (a signed modelcar, lineage), the scale MR keeps the
    modelcar volume and leaves every annotation in the form promoter reads back: the next
    `promoter rightsize` keeps the pins from it, and the team quota counts its GPU claim."""
    from promoter import rendering
    from promoter.core import live_overlay, tree_facts
    from promoter.core.render import ImagePin, Lineage
    from promoter.core.spec import ModelRef
    from promoter.service import composition

    config = _config(tmp_path, prometheus_url)
    settings = load_settings(config, environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    provider = composition.provider(settings)
    pins = live_overlay.Pins(
        lineage=Lineage(run_id="9f8e7d6c", source="mlflow-artifacts:/2/9f8e7d6c/artifacts/model"),
        modelcar=ImagePin("registry.example/models/llm-chat", "sha256:" + "c" * 64))
    request = live_overlay.request(settings.targets(), YAML(typ="safe").load(INTENT),
                                   "production", origin="llm-chat-8b version 3",
                                   model=ModelRef(name="llm-chat-8b", version="3"), pins=pins,
                                   scaling=None)
    tree = {f"manifests/{path}": text
            for path, text in rendering.renderer(settings).render(request).items()}
    _merge_seed(provider, tree)

    assert _forecast_json(run_cli, config, "--propose")["outcome"] == "created"
    branch = f"scale/{NAME}/production"
    live = live_overlay.read(provider, "manifests", NAME, "production", branch)
    assert live is not None and live.version == "3" and live.pins == pins
    assert live.scaled_object is not None
    overlay = f"manifests/{NAME}/overlays/production"
    assert tree_facts.team_claims({"k": provider.read(f"{overlay}/kustomization.yaml", branch)
                                   or ""}) == {"assistants": 12}
    patch = provider.read(f"{overlay}/patch-deployment.yaml", branch) or ""
    assert f'reference: "{pins.modelcar.reference}"' in patch      # type: ignore[union-attr]


def _commits(bare: Path, ref: str) -> int:
    return int(subprocess.run(["git", "rev-list", "--count", ref], cwd=bare, check=True,
                              capture_output=True, text=True).stdout)


def _assert_plot_png(data: object) -> None:
    """A real PNG of the stated size, with no metadata text or time chunks."""
    from matplotlib import image

    assert isinstance(data, bytes) and data.startswith(PNG_SIGNATURE)
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks.append(kind)
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    assert not {b"tEXt", b"iTXt", b"zTXt", b"tIME"} & set(chunks)   # no Software, no time
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (WIDTH_PX, HEIGHT_PX)
    pixels = image.imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (HEIGHT_PX, WIDTH_PX)
    assert len({tuple(row) for row in pixels.reshape(-1, pixels.shape[2])[::97]}) > 3  # drawn


def test_the_plot_is_the_same_png_for_the_same_plan(tmp_path: Path, prometheus_url: str) -> None:
    from promoter.forecast_plot import png

    settings = load_settings(_config(tmp_path, prometheus_url), environ={})
    deployment, target = forecasting.resolve(
        settings, YAML(typ="safe").load(INTENT), "production", "intent")
    source = PrometheusSource(prometheus_url)
    first = png(forecasting.plan(settings, deployment, target, source, now=TRAIN_END))
    _assert_plot_png(first)
    assert png(forecasting.plan(settings, deployment, target, source, now=TRAIN_END)) == first
    later = forecasting.plan(settings, deployment, target, source,
                             now=TRAIN_END + timedelta(days=3))
    assert png(later) != first     # another forecast, another picture


def test_propose_through_gitlab_commits_the_png_base64_and_again_is_a_no_op(
        tmp_path: Path, prometheus_url: str) -> None:
    """The GitLab stand-in, driven by python-gitlab: the plot goes up as a base64 commit
    action, the blob GitLab stores is the PNG's bytes, and proposing again changes nothing."""
    from promoter import rendering
    from promoter.forecast_plot import png
    from tests.gitlab.conftest import GitLabHarness, make_standin
    from tests.gitlab.standin import routes

    settings = load_settings(_config(tmp_path, prometheus_url), environ={})
    intent = YAML(typ="safe").load(INTENT)
    request = rendering.build_request(settings, intent, "production", origin="intent")
    standin = make_standin(tmp_path)
    seen: list[dict] = []
    create_commit = routes.Api.create_commit
    index = next(i for i, (_, verb, handler) in enumerate(routes.ROUTES)
                 if handler is create_commit and verb == "POST")

    def recording(api: object, user: object, params: dict) -> object:
        seen.extend(params.get("actions") or [])
        return create_commit(api, user, params)

    routes.ROUTES[index] = (routes.ROUTES[index][0], "POST", recording)
    try:
        standin.repo.commit_actions(   # the promotion's tree, merged
            "main", standin.repo.head("main"),
            [{"action": "create", "file_path": f"manifests/{path}", "content": text}
             for path, text in rendering.renderer(settings).render(request).items()],
            "Promote llm-chat\n")
        provider = GitLabHarness(standin, tmp_path).provider
        deployment, target = forecasting.resolve(settings, intent, "production", "intent")
        plan = forecasting.plan(settings, deployment, target, PrometheusSource(prometheus_url),
                                now=TRAIN_END)
        first = forecasting.propose(settings, plan, intent, provider)
        assert first.outcome.value == "created" and first.commit_created
        plot_path = f"manifests/{NAME}/forecast-production.png"
        [action] = [a for a in seen if a["file_path"] == plot_path]
        assert action["action"] == "create" and action["encoding"] == "base64"
        assert base64.b64decode(action["content"]) == png(plan)
        assert {a["encoding"] for a in seen
                if a["file_path"] != plot_path and a["action"] != "delete"} == {"text"}
        branch = f"scale/{NAME}/production"
        stored = standin.repo.file(branch, plot_path)
        assert stored == png(plan)
        _assert_plot_png(stored)
        assert provider.forge.read_files(branch, [plot_path], [])[plot_path] == stored
        description = standin.project.mrs[first.mr_iid].description
        assert f"![Forecast: last week seen, forecast and scheduled capacity]({plot_path})" \
            in description
        commits, actions = standin.repo.count("--all"), len(seen)

        again = forecasting.propose(settings, plan, intent, provider)

        assert again.outcome.value == "unchanged" and not again.commit_created
        assert again.mr_iid == first.mr_iid and len(standin.project.mrs) == 1
        assert standin.repo.count("--all") == commits and len(seen) == actions
    finally:
        routes.ROUTES[index] = (routes.ROUTES[index][0], "POST", create_commit)
        standin.stop()


@requires_kubectl
def test_on_kserve_the_predictor_is_scaled_and_kserve_makes_no_hpa(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    config = _config(tmp_path, prometheus_url)
    intent = INTENT.replace("serving: {platform: kubernetes}", "serving: {platform: kserve}")
    (tmp_path / "intent.yaml").write_text(intent, encoding="utf-8")
    code, _out, err = run_cli("render", "--intent", str(tmp_path / "intent.yaml"), "--env",
                              "production", "--config", str(config), "--out",
                              str(tmp_path / "tree"))
    assert code == 0, err
    overlay = tmp_path / "tree" / NAME / "overlays" / "production"
    settings = load_settings(config, environ={})
    deployment, target = forecasting.resolve(settings, YAML(typ="safe").load(intent),
                                             "production", "intent")
    plan = forecasting.plan(settings, deployment, target, PrometheusSource(prometheus_url),
                            now=TRAIN_END)
    _accept(settings, YAML(typ="safe").load(intent), plan, tmp_path / "tree")
    built = list(YAML(typ="safe").load_all(kustomize.build(overlay)))
    scaled = next(doc for doc in built if doc["kind"] == "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"name": f"{NAME}-predictor"}
    service = next(doc for doc in built if doc["kind"] == "InferenceService")
    assert service["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    assert schemas.problems(service) == [] and schemas.problems(scaled) == []


def _merge_seed(provider: Any, tree: dict[str, str]) -> None:
    """``tree`` on the target branch as llm-chat-8b version 3's merged promotion."""
    from promoter.ports.git import Proposal

    seeded = provider.propose(Proposal(model="llm-chat-8b", name=NAME, env="production",
                                       version="3", files=tree, managed_prefixes=(),
                                       title="seed", description="seed"))
    assert seeded.mr_iid is not None
    for user in ("alice", "bob"):
        provider.approve(seeded.mr_iid, user)
    provider.merge(seeded.mr_iid, "alice")
