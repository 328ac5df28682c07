"""`promoter rightsize` and `promoter cost` against a real Prometheus with DCGM exporter series.

Four deployments, eight days each: ``sliced`` (Triton; three whole A100s idling at 12% with
6.5 GB used: needs one replica at night and a 2g.20gb MIG slice), ``oversized`` (vLLM, the same
load: one replica at night, but no slice: vLLM reserves its share of GPU memory up front, so
its framebuffer use is no evidence), ``wide`` (Triton; two GPUs per replica at 20% and 15 GB
each: one GPU suffices) and ``busy`` (vLLM; one GPU at 85%: right-sized, nothing to propose).
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from promoter import forecasting, rendering, rightsizing
from promoter.adapters.prometheus import PrometheusSource
from promoter.core import keda_overlay, live_overlay
from promoter.core.live_overlay import Pins
from promoter.core.render import ImagePin, Lineage
from promoter.core.runtimes import Telemetry
from promoter.core.spec import ModelRef
from promoter.errors import UserError
from promoter.settings import load_settings
from tests.conftest import requires_kubectl
from tests.telemetry import traces
from tests.telemetry.prometheus_server import available, prometheus
from tests.telemetry.rightsize_cli import intent_yaml, rightsize_json, write_config

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(available() is not None, reason=available() or "")]

NAMESPACE = "models-production"
GPU = "NVIDIA A100-SXM4-80GB"
FB_TOTAL = 81_500.0
# name: (pods, gpus per pod, utilisation %, framebuffer used MiB, peak req/s, team)
FLEET = {"sliced": (3, 1, 12.0, 6_500.0, 20.0, "vision"),
         "oversized": (3, 1, 12.0, 6_500.0, 20.0, "search"),
         "wide": (1, 2, 20.0, 15_000.0, 5.0, "search"),
         "busy": (1, 1, 85.0, 70_000.0, 8.0, "assistants")}
RUNTIME = {"sliced": "triton", "wide": "triton", "oversized": "vllm", "busy": "vllm"}
REQUESTS = {"triton": "nv_inference_request_success", "vllm": "vllm:request_success_total"}
WEEKS = 8 / 7
BURST_POD = "burst-5c9f7d8b6-q2w4e"   # GPU samples for 35 minutes: 7 x 300 s
# ``slice`` (Triton; two replicas on a 1g.10gb MIG instance each, 1/7 of a GPU, all along, at
# under 1 req/s: one replica would do). DCGM exports framebuffer use for a MIG instance, no
# utilisation.
MIG_PODS = ("slice-7d9c8b5f4-m1g2x", "slice-7d9c8b5f4-m1g2y")
MIG_INTENT = """\
apiVersion: promoter.dev/v1alpha1
kind: ModelDeployment
metadata: {name: slice}
spec:
  model: {name: slice, version: "1"}
  owner: {team: vision, costCenter: cc-1}
  runtime: triton
  serving: {platform: kubernetes}
  resources: {cpu: "8", memory: 64Gi, gpu: {count: 1, type: NVIDIA-A100-SXM4-80GB, mig: 1g.10gb}}
  scaling: {minReplicas: 2, maxReplicas: 4, metric: cpu, target: 70}
"""
END = traces.START + timedelta(days=8)


def _intent(name: str, pods: int, gpus: int) -> str:
    return intent_yaml(name, team=FLEET[name][5], runtime=RUNTIME[name],
                       gpu=f"{{count: {gpus}, type: NVIDIA-A100-SXM4-80GB}}",
                       min_replicas=pods, max_replicas=6)


def _history() -> str:
    rng = random.Random(3)
    lines: list[str] = []
    families: dict[str, list[str]] = {"req": [], "util": [], "used": [], "free": [], "kube": []}
    for name, (pods, gpus, util, used, peak, team) in FLEET.items():
        trace = traces.generate(weeks=WEEKS, peak=peak / pods, seed=len(name))
        for index in range(pods):
            pod = f"{name}-6b8d4f9c7-{'abcde'[index]}x7k2"
            labels = f'namespace="{NAMESPACE}",pod="{pod}"'
            total = 0.0
            for moment, rate in zip(trace.times, trace.rate, strict=True):
                stamp = int(moment.timestamp())
                total += rate * 300
                families["req"].append(f"{REQUESTS[RUNTIME[name]]}{{{labels}}} {total:.1f} "
                                       f"{stamp}")
                for gpu in range(gpus):
                    g = f'{labels},gpu="{gpu}",modelName="{GPU}"'
                    u = max(0.0, min(100.0, util + rng.gauss(0, 2)))
                    m = used + rng.uniform(-200, 200)
                    families["util"].append(f"DCGM_FI_DEV_GPU_UTIL{{{g}}} {u:.1f} {stamp}")
                    families["used"].append(f"DCGM_FI_DEV_FB_USED{{{g}}} {m:.0f} {stamp}")
                    families["free"].append(f"DCGM_FI_DEV_FB_FREE{{{g}}} {FB_TOTAL - m:.0f} "
                                            f"{stamp}")
                # As kube-state-metrics exports it: every scrape, while the pod exists.
                families["kube"].append(f'kube_pod_labels{{{labels},label_team="{team}"}} 1 '
                                        f"{stamp}")
    # A burst replica KEDA started for half an hour, between two hour marks (10:05-10:35).
    labels = f'namespace="{NAMESPACE}",pod="{BURST_POD}"'
    first = int((traces.START + timedelta(days=2, hours=10, minutes=5)).timestamp())
    for stamp in range(first, first + 31 * 60, 300):
        g = f'{labels},gpu="0",modelName="{GPU}"'
        families["util"].append(f"DCGM_FI_DEV_GPU_UTIL{{{g}}} 60.0 {stamp}")
        families["used"].append(f"DCGM_FI_DEV_FB_USED{{{g}}} 9000 {stamp}")
        families["kube"].append(f'kube_pod_labels{{{labels},label_team="vision"}} 1 {stamp}')
    # MIG instances all along: DCGM reports framebuffer use for them, no utilisation.
    trace = traces.generate(weeks=WEEKS, peak=1.0, seed=1)
    for index, pod in enumerate(MIG_PODS):
        labels = f'namespace="{NAMESPACE}",pod="{pod}"'
        total = 0.0
        for moment, rate in zip(trace.times, trace.rate, strict=True):
            stamp = int(moment.timestamp())
            total += rate / len(MIG_PODS) * 300
            families["req"].append(f"{REQUESTS['triton']}{{{labels}}} {total:.1f} {stamp}")
            g = (f'{labels},gpu="{index}",modelName="{GPU}",GPU_I_ID="1",'
                 'GPU_I_PROFILE="1g.10gb"')
            families["used"].append(f"DCGM_FI_DEV_FB_USED{{{g}}} 4000 {stamp}")
            families["free"].append(f"DCGM_FI_DEV_FB_FREE{{{g}}} 5700 {stamp}")
            families["kube"].append(f'kube_pod_labels{{{labels},label_team="vision"}} 1 '
                                    f"{stamp}")
    # A GPU no pod holds (idle on its node): dcgm-exporter reports it without pod labels.
    for moment in trace.times:
        stamp = int(moment.timestamp())
        g = f'gpu="7",modelName="{GPU}",Hostname="gpu-node-3"'
        families["used"].append(f"DCGM_FI_DEV_FB_USED{{{g}}} 0 {stamp}")
        families["free"].append(f"DCGM_FI_DEV_FB_FREE{{{g}}} {FB_TOTAL:.0f} {stamp}")
    for family in families.values():
        lines.extend(family)
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory):
    with prometheus(_history(), tmp_path_factory.mktemp("prometheus-dcgm")) as url:
        yield url


def _config(tmp_path: Path, url: str) -> Path:
    config = write_config(tmp_path, url, NAMESPACE)
    for name, (pods, gpus, *_rest) in FLEET.items():
        (tmp_path / f"{name}.yaml").write_text(_intent(name, pods, gpus), encoding="utf-8")
    return config


def _rightsize(run_cli, tmp_path: Path, url: str, name: str) -> dict:
    return rightsize_json(run_cli, _config(tmp_path, url), tmp_path / f"{name}.yaml", END)


def test_an_oversized_deployment_gets_fewer_replicas_and_a_mig_slice(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    result = _rightsize(run_cli, tmp_path, prometheus_url, "sliced")
    assert result["evidence_days"] >= 7.5
    by_kind = {p["kind"]: p for p in result["proposals"]}
    assert set(by_kind) == {"min-replicas", "mig"}
    assert (by_kind["min-replicas"]["current"], by_kind["min-replicas"]["proposed"]) == ("3", "1")
    # 12% utilisation is above 1g's 1/7 share at 70%; 2g.20gb is the smallest that fits.
    assert by_kind["mig"]["proposed"] == "2g.20gb"
    assert "6," in by_kind["mig"]["evidence"] and "MiB" in by_kind["mig"]["evidence"]
    assert by_kind["min-replicas"]["gpu_hours_saved_month"] == 2 * 730
    assert "USD" in by_kind["mig"]["saving"]
    assert result["notes"] == []


def test_vllms_reserved_memory_is_not_evidence_for_a_slice(run_cli, tmp_path: Path,
                                                          prometheus_url: str) -> None:
    """The same load on vLLM: its framebuffer use is the share it reserves at start, so a
    slice sized from it could not hold what vLLM asks for; replicas are still sized."""
    result = _rightsize(run_cli, tmp_path, prometheus_url, "oversized")
    assert [(p["kind"], p["proposed"]) for p in result["proposals"]] == [("min-replicas", "1")]
    assert result["notes"] and "GPU memory is not evidence for the vllm runtime" in \
        result["notes"][0]


def test_a_replica_spread_over_idle_gpus_gets_fewer(run_cli, tmp_path: Path,
                                                    prometheus_url: str) -> None:
    result = _rightsize(run_cli, tmp_path, prometheus_url, "wide")
    assert [(p["kind"], p["current"], p["proposed"]) for p in result["proposals"]] == [
        ("gpus", "2", "1")]
    assert result["proposals"][0]["gpu_hours_saved_month"] == pytest.approx(730, rel=0.01)


def test_a_right_sized_deployment_gets_no_proposal(run_cli, tmp_path: Path,
                                                   prometheus_url: str) -> None:
    assert _rightsize(run_cli, tmp_path, prometheus_url, "busy")["proposals"] == []


def test_a_mig_deployment_with_low_load_gets_fewer_replicas(run_cli, tmp_path: Path,
                                                           prometheus_url: str) -> None:
    """DCGM exports no GPU_UTIL for a MIG instance: the evidence, taken from it, covered 0
    days, and a MIG deployment never got a proposal, not even the lower minimum its quietest
    hour shows. Its days now come from framebuffer use; only what is sized from utilisation
    (a profile, a GPU count) waits for utilisation, and the report says so."""
    (tmp_path / "slice.yaml").write_text(MIG_INTENT, encoding="utf-8")
    result = _rightsize(run_cli, tmp_path, prometheus_url, "slice")
    assert result["evidence_days"] >= 7.5
    assert [(p["kind"], p["current"], p["proposed"]) for p in result["proposals"]] == [
        ("min-replicas", "2", "1")]
    # One replica's 1/7 of a GPU for the whole month: both replicas sat at the minimum.
    assert result["proposals"][0]["gpu_hours_saved_month"] == pytest.approx(730 / 7, abs=0.1)
    assert result["notes"] and "no DCGM_FI_DEV_GPU_UTIL samples" in result["notes"][0]


def test_a_request_rate_query_that_does_not_aggregate_is_refused(tmp_path: Path,
                                                                 prometheus_url: str) -> None:
    """Per-pod series (a requestRate without sum(...)): only the first pod's rate was read, so
    the quietest hour looked a third as busy as it was and minReplicas 3 came out as 1.
    Refused, as `promoter forecast` refuses it."""
    settings = load_settings(_config(tmp_path, prometheus_url), environ={})
    deployment, target = forecasting.resolve(
        settings, YAML(typ="safe").load(_intent("sliced", 3, 1)), "production", "intent")
    per_pod = Telemetry.model_validate({"requestRate": (
        'rate(nv_inference_request_success{namespace="{namespace}",pod=~"{pods}"}[{window}])')})
    with pytest.raises(UserError, match="returned 3 series, not one"):
        rightsizing.evidence(settings, deployment, target, PrometheusSource(prometheus_url),
                             per_pod, now=END, days=8)


def test_cost_by_team_model_and_env(run_cli, tmp_path: Path, prometheus_url: str) -> None:
    config = _config(tmp_path, prometheus_url)

    def rows(by: str) -> dict[str, dict]:
        code, out, err = run_cli("cost", "--by", by, "--days", "8", "--until", END.isoformat(),
                                 "--config", str(config), "--output", "json")
        assert code == 0, err
        return {row[by]: row for row in json.loads(out)["rows"]}

    hours = 8 * 24
    models = rows("model")
    assert set(models) == {"sliced", "oversized", "wide", "busy", "burst", "slice"}
    assert models["slice"]["gpu_hours"] == pytest.approx(2 * hours / 7, rel=0.03)
    assert models["oversized"]["gpu_hours"] == pytest.approx(3 * hours, rel=0.03)
    assert models["wide"]["gpu_hours"] == pytest.approx(2 * hours, rel=0.03)
    assert models["busy"]["cost"] == pytest.approx(3.0 * hours, rel=0.03)
    teams = rows("team")
    # The burst replica lived between two hourly steps: its team is still found.
    assert "unknown" not in teams
    assert teams["search"]["gpu_hours"] == pytest.approx(5 * hours, rel=0.03)
    assert teams["assistants"]["gpu_hours"] == pytest.approx(hours, rel=0.03)
    assert teams["vision"]["gpu_hours"] == pytest.approx(3 * hours + 2 * hours / 7,
                                                        rel=0.03)
    assert set(rows("env")) == {"production"}


def test_a_gpu_no_pod_holds_is_not_counted(tmp_path: Path, prometheus_url: str) -> None:
    """An idle GPU (no pod label) was counted as 24 GPU-hours a day of an "unknown" model,
    team and environment: `cost` counts the GPUs pods hold, as the README says."""
    settings = load_settings(_config(tmp_path, prometheus_url), environ={})
    source = PrometheusSource(prometheus_url)
    start = traces.START + timedelta(days=2)
    end = start + timedelta(days=1)
    by_env = {row.key: row.gpu_hours for row in rightsizing.cost(
        settings, source, by="env", start=start, end=end)}
    by_model = {row.key: row.gpu_hours for row in rightsizing.cost(
        settings, source, by="model", start=start, end=end)}
    assert set(by_env) == {"production"}
    assert "unknown" not in by_model
    # The pods' GPUs alone: 3 + 3 + 2 + 1 whole GPUs and two 1/7 slices all day, and the
    # burst replica; not the idle GPU's 24 hours as well.
    assert by_env["production"] == pytest.approx(
        9 * 24 + 2 * 24 / 7 + by_model["burst"], abs=1e-6)
    assert by_model["burst"] < 1


@pytest.mark.parametrize("microseconds", [0, 600])
def test_adjacent_cost_periods_add_up_and_a_busy_day_is_24_gpu_hours(
        tmp_path: Path, prometheus_url: str, microseconds: int) -> None:
    """query_range returns both ends of a period: N steps, N + 1 samples. Counting each as a
    step counted the boundary sample in both adjacent periods (one GPU busy all day: 24.08
    GPU-hours). Each sample now counts for the step it closes, so the one at the start,
    which closes the step before the period, is left out. A start with a fraction of a
    millisecond (`--until` defaults to now) is sent rounded, and the sample Prometheus
    returns at that rounded instant must not count as one after the start."""
    settings = load_settings(_config(tmp_path, prometheus_url), environ={})
    source = PrometheusSource(prometheus_url)
    day = timedelta(days=1)

    def hours(first: int, days: int) -> dict[str, float]:
        start = traces.START + first * day + timedelta(microseconds=microseconds)
        return {row.key: row.gpu_hours for row in rightsizing.cost(
            settings, source, by="model", start=start, end=start + days * day)}

    first, second, both = hours(2, 1), hours(3, 1), hours(2, 2)
    assert first["busy"] == pytest.approx(24.0, abs=1e-9)
    assert first["slice"] == pytest.approx(2 * 24.0 / 7, abs=1e-9)
    for model in both:
        assert first.get(model, 0) + second.get(model, 0) == pytest.approx(both[model],
                                                                           abs=1e-9)


# What a promotion of version 1 pins (core.pipeline builds its request with these).
PINS = Pins(lineage=Lineage(run_id="0a1b2c3d4e5f",
                            source="mlflow-artifacts:/1/0a1b2c3d4e5f/artifacts/model"),
            modelcar=ImagePin("registry.example/models/oversized", "sha256:" + "5" * 64))
# A merged `promoter forecast` MR's ScaledObject (one field per line, as the forecast writes it).
SCALED_OBJECT = """\
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: oversized
  labels:
    app.kubernetes.io/managed-by: promoter
spec:
  scaleTargetRef:
    name: {target}
  minReplicaCount: 3
  maxReplicaCount: 6
  triggers:
  - type: cron
    metadata:
      timezone: Europe/Berlin
      start: 45 7 * * 1-5
      end: 0 19 * * 1-5
      desiredReplicas: "5"
"""


def _seed(settings, name: str, intent_text: str, *,  # type: ignore[no-untyped-def]
          pins: Pins | None = None, scaling: str | None = None):
    """The target branch after a promotion of version 1 (rendered as the pipeline renders it,
    with ``pins`` and, for an overlay handed to KEDA, the accepted ``scaling``) is merged."""
    from ruamel.yaml import YAML

    from promoter import rendering
    from promoter.ports.git import Proposal
    from promoter.service import composition

    provider = composition.provider(settings)
    request = live_overlay.request(settings.targets(), YAML(typ="safe").load(intent_text),
                                   "production", origin=f"{name} version 1",
                                   model=ModelRef(name=name, version="1"), pins=pins or Pins(),
                                   scaling=scaling)
    tree = {f"manifests/{path}": text
            for path, text in rendering.renderer(settings).render(request).items()}
    seeded = provider.propose(Proposal(model=name, name=name, env="production", version="1",
                                       files=tree, managed_prefixes=(), title="seed",
                                       description="seed"))
    assert seeded.mr_iid is not None
    for user in ("alice", "bob"):
        provider.approve(seeded.mr_iid, user)
    provider.merge(seeded.mr_iid, "alice")
    return provider, tree


def test_propose_rerenders_the_overlay_with_smaller_resources(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    from promoter.settings import load_settings

    config = _config(tmp_path, prometheus_url)
    settings = load_settings(config, environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    provider, tree = _seed(settings, "sliced", _intent("sliced", 3, 1))
    code, out, err = run_cli("rightsize", "--intent", str(tmp_path / "sliced.yaml"), "--env",
                             "production", "--config", str(config), "--days", "8", "--until",
                             END.isoformat(), "--propose")
    assert code == 0, err
    assert "(created)" in out
    branch, overlay = "rightsize/sliced/production", "manifests/sliced/overlays/production"
    patch = provider.read(f"{overlay}/patch-deployment.yaml", branch) or ""
    assert "nvidia.com/mig-2g.20gb" in patch
    assert "nvidia.com/mig-2g.20gb" not in tree[f"{overlay}/patch-deployment.yaml"]
    hpa = provider.read(f"{overlay}/patch-horizontalpodautoscaler.yaml", branch) or ""
    assert "minReplicas: 1" in hpa
    assert "minReplicas: 3" in tree[f"{overlay}/patch-horizontalpodautoscaler.yaml"]
    mr = next(m for m in provider.list_mrs() if m.source_branch == branch)
    assert "| `spec.resources.gpu.mig` | whole GPU | 2g.20gb |" in mr.description
    assert "USD" in mr.description


def _propose(run_cli, tmp_path: Path, url: str, intent_text: str) -> tuple[int, str]:
    config = _config(tmp_path, url)
    (tmp_path / "oversized.yaml").write_text(intent_text, encoding="utf-8")
    code, _out, err = run_cli("rightsize", "--intent", str(tmp_path / "oversized.yaml"), "--env",
                              "production", "--config", str(config), "--days", "8", "--until",
                              END.isoformat(), "--propose")
    return code, err


def _autoscalers(objects: list[dict], target: str) -> list[str]:
    """The HPAs and KEDA ScaledObjects in a built tree that scale ``target``."""
    return [doc["kind"] for doc in objects
            if doc["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
            and doc["spec"]["scaleTargetRef"]["name"] == target]


@requires_kubectl
@pytest.mark.parametrize(("platform", "keda"), [("kubernetes", False), ("kubernetes", True),
                                                ("kserve", True)])
def test_propose_keeps_the_signed_modelcar_lineage_and_keda_scaling_of_the_live_overlay(
        run_cli, tmp_path: Path, prometheus_url: str, platform: str, keda: bool) -> None:
    """A right-sizing MR re-renders the overlay, but builds no artifact: the modelcar the
    promotion signed, its lineage and an accepted ScaledObject must all survive, and the built
    tree must scale the workload with exactly one autoscaler."""
    from ruamel.yaml import YAML

    from promoter.adapters import kustomize
    from promoter.settings import load_settings

    intent_text = _intent("oversized", 3, 1).replace("platform: kubernetes",
                                                     f"platform: {platform}")
    workload = "oversized" if platform == "kubernetes" else "oversized-predictor"
    settings = load_settings(_config(tmp_path, prometheus_url),
                             environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    provider, _tree = _seed(settings, "oversized", intent_text, pins=PINS,
                            scaling=SCALED_OBJECT.format(target=workload) if keda else None)

    code, err = _propose(run_cli, tmp_path, prometheus_url, intent_text)
    assert code == 0, err
    branch, overlay = "rightsize/oversized/production", "manifests/oversized/overlays/production"
    proposed = provider.files("manifests/", branch)
    # the right-sizing itself (vLLM: replicas only, its reserved memory is no evidence)
    assert f"{overlay}/kustomization.yaml" in proposed
    live = live_overlay.pins_of(proposed[f"{overlay}/kustomization.yaml"])
    assert live == PINS                                             # digest and lineage kept
    assert (f"{overlay}/{keda_overlay.SCALED_OBJECT_FILE}" in proposed) == keda
    assert (f"{overlay}/{keda_overlay.HPA_PATCH_FILE}" in proposed) == (
        platform == "kubernetes" and not keda)

    built = tmp_path / "built"
    rendering.write_tree(built, {path.removeprefix("manifests/"): text
                                 for path, text in proposed.items()})
    objects = list(YAML(typ="safe").load_all(kustomize.build(
        built / "oversized" / "overlays" / "production")))
    if platform == "kubernetes":
        [deployment] = [doc for doc in objects if doc["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        assert volumes["model"]["image"]["reference"] == PINS.modelcar.reference  # type: ignore
        mounted = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert mounted <= set(volumes)     # no mount of a volume the Deployment lacks
        assert _autoscalers(objects, workload) == (["ScaledObject"] if keda
                                                   else ["HorizontalPodAutoscaler"])
    else:
        [service] = [doc for doc in objects if doc["kind"] == "InferenceService"]
        predictor = service["spec"]["predictor"]
        assert predictor["model"]["storageUri"] == f"oci://{PINS.modelcar.reference}"  # type: ignore
        # KServe makes no HPA of its own for an externally scaled predictor: KEDA's is the one.
        assert service["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == \
            "external"
        assert _autoscalers(objects, workload) == ["ScaledObject"]
    if keda:
        [scaled] = [doc for doc in objects if doc["kind"] == "ScaledObject"]
        assert scaled["spec"]["minReplicaCount"] == 1      # bounded by the right-sized intent
        assert scaled["spec"]["triggers"][0]["metadata"]["start"] == "45 7 * * 1-5"


def test_propose_is_refused_without_a_live_overlay_to_keep(run_cli, tmp_path: Path,
                                                          prometheus_url: str) -> None:
    code, err = _propose(run_cli, tmp_path, prometheus_url, _intent("oversized", 3, 1))
    assert code != 0
    assert "manifests/oversized/overlays/production/kustomization.yaml is not on main" in err
    assert "promote the model to production first" in err


def test_propose_is_refused_for_a_version_the_overlay_does_not_run(
        run_cli, tmp_path: Path, prometheus_url: str) -> None:
    from promoter.settings import load_settings

    settings = load_settings(_config(tmp_path, prometheus_url),
                             environ={"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    _seed(settings, "oversized", _intent("oversized", 3, 1), pins=PINS)
    code, err = _propose(run_cli, tmp_path, prometheus_url,
                         _intent("oversized", 3, 1).replace('version: "1"', 'version: "2"'))
    assert code != 0
    assert "oversized in production runs version 1 on main, not version 2" in err


def test_propose_is_refused_when_policy_denies(run_cli, tmp_path: Path,
                                               prometheus_url: str) -> None:
    config = _config(tmp_path, prometheus_url)
    config.write_text(config.read_text() + "    allowed_gpu_types: [NVIDIA-L40S]\n")
    code, _out, err = run_cli("rightsize", "--intent", str(tmp_path / "oversized.yaml"), "--env",
                              "production", "--config", str(config), "--days", "8", "--until",
                              END.isoformat(), "--propose")
    assert code == 4
    assert "NVIDIA-A100-SXM4-80GB is not allowed in production" in err


def test_without_a_model_every_live_deployment_is_judged(
        run_cli, tmp_path: Path, prometheus_url: str, mlflow_server,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    client = mlflow_server.client()
    for name in ("oversized", "busy"):
        pods, gpus, *_rest, team = FLEET[name]
        client.create_registered_model(name)
        run = client.create_run(client.create_experiment(f"rightsize-{name}"))
        version = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model",
                                              run_id=run.info.run_id, tags={
            "deploy.owner.team": team, "deploy.owner.costCenter": "cc-1",
            "deploy.runtime": "vllm", "deploy.serving.platform": "kubernetes",
            "deploy.resources.cpu": "8", "deploy.resources.memory": "64Gi",
            "deploy.resources.gpu.count": str(gpus),
            "deploy.resources.gpu.type": "NVIDIA-A100-SXM4-80GB",
            "deploy.scaling.minReplicas": str(pods), "deploy.scaling.maxReplicas": "6"})
        client.set_registered_model_alias(name, "production", version.version)
    client.create_registered_model("never-deployed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    config = _config(tmp_path, prometheus_url)
    code, out, err = run_cli("rightsize", "--env", "production", "--config", str(config),
                             "--days", "8", "--until", END.isoformat(), "--output", "json")
    assert code == 0, err
    rows = {row["model"]: row for row in json.loads(out)["deployments"]}
    # (The MLflow server is shared by the session: other tests' models may be listed too.)
    assert {"oversized", "busy"} <= set(rows) and "never-deployed" not in rows
    assert {p["field"] for p in rows["oversized"]["proposals"]} == {"spec.scaling.minReplicas"}
    assert rows["busy"]["proposals"] == []
