"""`promoter gitops policy`: what each overlay declares, judged by the pipeline's rules."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from promoter.core.declared_intent import declared_intent
from promoter.core.intent import resolve_intent
from promoter.errors import UserError
from promoter.rendering import load_intent_file
from promoter.settings import load_settings
from tests.ci.local_runner import committed_manifests, git
from tests.conftest import EXAMPLES, ROOT, cli_runner, requires_kubectl

pytestmark = requires_kubectl


@pytest.mark.parametrize("model", ["fraud-detector", "llm-chat", "vision-segmenter", "ad-ranker"])
@pytest.mark.parametrize("env", ["staging", "production"])
def test_declared_placement_round_trips_from_the_rendered_overlay(model: str, env: str) -> None:
    targets = load_settings(EXAMPLES / "promoter.yaml", environ={}).targets()
    overlay = ROOT / f"manifests/{model}/overlays/{env}"
    built = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                           text=True, check=True).stdout
    declared = resolve_intent(targets, declared_intent(YAML(typ="safe").load_all(built)), env,
                              origin="overlay").spec
    source = resolve_intent(targets, load_intent_file(EXAMPLES / f"{model}.yaml"), env,
                            origin="example").spec
    assert declared.runtime == source.runtime
    assert declared.owner == source.owner
    assert declared.resources.gpu == source.resources.gpu
    assert sorted(declared.regions or []) == sorted(source.regions or [])
    assert (declared.scaling.min_replicas, declared.scaling.max_replicas) == \
        (source.scaling.min_replicas, source.scaling.max_replicas)
    assert (declared.model.name, declared.model.version) == (source.model.name,
                                                             source.model.version)


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "promoter.yaml"
    path.write_text((EXAMPLES / "promoter.yaml").read_text() + extra)
    return path


def test_overlays_allowed_by_the_example_policy_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                        "policy", str(ROOT / "manifests"), "--output", "json")
    assert code == 0, err
    verdicts = json.loads(out)
    assert len(verdicts) == len(list((ROOT / "manifests").glob("*/overlays/*"))) == 10
    assert all(v["allowed"] for v in verdicts)


def test_gpu_type_region_and_team_denials_exit_4(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "promoter.yaml"
    settings = YAML(typ="safe").load((EXAMPLES / "promoter.yaml").read_text())
    settings["environments"]["production"]["allowed_gpu_types"] = ["NVIDIA-H100-80GB-HBM3"]
    settings["environments"]["production"]["allowed_regions"] = ["us-east-1"]
    settings["policy"]["teams"] = {"assistants": {"environments": ["staging"]},
                                   "risk-ml": {}, "vision": {}}
    with config.open("w") as handle:
        YAML().dump(settings, handle)
    code, out, _ = cli_runner(capsys)("--config", str(config), "gitops", "policy",
                                      str(ROOT / "manifests/llm-chat/overlays/production"),
                                      str(ROOT / "manifests/llm-chat/overlays/staging"),
                                      "--output", "json")
    assert code == 4
    production, staging = json.loads(out)
    assert not production["allowed"] and staging["allowed"]
    reasons = " ".join(production["reasons"])
    assert "NVIDIA-L40S" in reasons and "team-permission" in reasons


def test_a_broken_overlay_is_a_denial_with_its_reason(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    overlay = tmp_path / "m/overlays/production"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("resources: [../../missing]\n")
    code, out, _ = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                      "policy", str(tmp_path))
    assert code == 4 and "DENY" in out


def _tree_with_a_second_assistants_model(tmp_path: Path) -> Path:
    """The reference tree plus a copy of llm-chat (team assistants, 8 GPUs in production at
    full scale) as a second model of the same team."""
    tree = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", tree)
    shutil.copytree(tree / "llm-chat", tree / "llm-chat-2")
    return tree


def test_the_team_quota_is_judged_on_the_sum_over_the_tree(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """Each assistants overlay (8 GPUs) fits the quota of 12 alone; the two together do not."""
    tree = _tree_with_a_second_assistants_model(tmp_path)
    config = _config(tmp_path, "")
    config.write_text(config.read_text().replace("policy:\n", "policy:\n"
                                                 "  team_gpu_quota: {assistants: 12}\n", 1))
    code, out, err = cli_runner(capsys)("--config", str(config), "gitops", "policy", str(tree),
                                        "--output", "json")
    assert code == 4, err
    denied = {Path(v["overlay"]).relative_to(tree).as_posix(): v["reasons"]
              for v in json.loads(out) if not v["allowed"]}
    assert sorted(denied) == ["llm-chat-2/overlays/production", "llm-chat/overlays/production"]
    reason = denied["llm-chat/overlays/production"][0]
    assert reason.startswith("team gpu quota: assistants claims 16 GPUs in production")
    assert f"{tree}/llm-chat-2/overlays/production (8)" in reason
    assert f"{tree}/llm-chat/overlays/production (8)" in reason
    assert "over its quota of 12" in reason


def test_changed_from_judges_every_overlay_of_a_model_whose_base_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge request changing only llm-chat's base/: both llm-chat overlays are judged, and
    the team quota still sums the whole tree."""
    repo = tmp_path / "gitops"
    committed_manifests(repo)
    base = repo / "manifests/llm-chat/base/inferenceservice.yaml"
    base.write_text(base.read_text() + "# reviewed\n")
    git(repo, "commit", "-qam", "touch llm-chat base")
    monkeypatch.chdir(repo)
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                        "policy", "manifests/", "--changed-from", "HEAD~1",
                                        "--output", "json")
    assert code == 0, err
    assert [v["overlay"] for v in json.loads(out)] == ["manifests/llm-chat/overlays/production",
                                                       "manifests/llm-chat/overlays/staging"]
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                        "policy", "manifests/", "--changed-from", "no-such-rev")
    assert code == 1 and "cannot list the files changed since 'no-such-rev'" in err


# --------------------------------------------- what a hand-edited overlay may not hide

def _built(overlay: Path) -> str:
    return subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                          text=True, check=True).stdout


def _documents(overlay: Path) -> list[dict]:
    return [d for d in YAML(typ="safe").load_all(_built(overlay)) if isinstance(d, dict)]


def _workload(documents: list[dict]) -> dict:
    return next(d for d in documents if d["kind"] == "Deployment")


def _edits() -> dict[str, object]:
    """Each a change of code-assistant's production overlay (4 H100s x at most 3 replicas:
    12 GPUs, exactly devtools' quota here) that the gate read partly before."""
    def second_container(docs: list[dict]) -> None:
        pod = _workload(docs)["spec"]["template"]["spec"]
        pod["containers"].append({**pod["containers"][0], "name": "sidecar"})

    def product_by_affinity(docs: list[dict]) -> None:
        pod = _workload(docs)["spec"]["template"]["spec"]
        pod.setdefault("affinity", {})["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                       "values": ["NVIDIA-B200"]}]}]}}

    def many_replicas(docs: list[dict]) -> None:
        docs[:] = [d for d in docs if d["kind"] != "HorizontalPodAutoscaler"]
        _workload(docs)["spec"]["replicas"] = 50

    def keda_bounds(docs: list[dict]) -> None:
        docs[:] = [d for d in docs if d["kind"] != "HorizontalPodAutoscaler"]
        docs.append({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                     "metadata": {"name": "code-assistant", "namespace": "models-production"},
                     "spec": {"scaleTargetRef": {"name": "code-assistant"},
                              "minReplicaCount": 1, "maxReplicaCount": 20}})

    def keda_default_max(docs: list[dict]) -> None:
        keda_bounds(docs)
        del docs[-1]["spec"]["maxReplicaCount"]   # KEDA's default: 100 replicas

    def keda_default_min(docs: list[dict]) -> None:
        keda_bounds(docs)
        docs[-1]["spec"]["maxReplicaCount"] = 3   # within the quota: 4 GPUs x 3 = 12
        del docs[-1]["spec"]["minReplicaCount"]   # KEDA's default: 0, scale-to-zero

    def keda_idle(docs: list[dict]) -> None:
        keda_bounds(docs)
        docs[-1]["spec"]["maxReplicaCount"] = 3   # within the quota: 4 GPUs x 3 = 12
        docs[-1]["spec"]["idleReplicaCount"] = 0  # scale-to-zero while no trigger is active

    def keda_max_as_text(docs: list[dict]) -> None:
        keda_bounds(docs)
        docs[-1]["spec"]["maxReplicaCount"] = "20"

    def decoy_after(docs: list[dict]) -> None:
        decoy = json.loads(json.dumps(_workload(docs)))
        decoy["metadata"]["name"] = "decoy"
        docs.append(decoy)

    def other_kind(docs: list[dict]) -> None:
        docs.append({"apiVersion": "apps/v1", "kind": "StatefulSet",
                     "metadata": {"name": "x", "namespace": "models-production"}})

    def other_namespace(docs: list[dict]) -> None:
        _workload(docs)["metadata"]["namespace"] = "kube-system"

    def elsewhere(docs: list[dict]) -> None:
        for doc in docs:
            doc["metadata"]["namespace"] = "models-staging"

    def mig_on_a_forbidden_product(docs: list[dict]) -> None:
        pod = _workload(docs)["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for part in ("limits", "requests"):
                amounts = container.get("resources", {}).get(part, {})
                if "nvidia.com/gpu" in amounts:
                    amounts["nvidia.com/mig-1g.10gb"] = amounts.pop("nvidia.com/gpu")
        pod["nodeSelector"]["nvidia.com/gpu.product"] = "NVIDIA-T4"

    def mixed_gpu_resources(docs: list[dict]) -> None:
        container = _workload(docs)["spec"]["template"]["spec"]["containers"][0]
        container["resources"]["limits"]["nvidia.com/mig-1g.10gb"] = "1"

    return {"second container": (second_container, "quota"),
            "MIG instances on a forbidden product": (mig_on_a_forbidden_product, "NVIDIA-T4"),
            "whole GPUs and MIG mixed": (mixed_gpu_resources, "mixes GPU resources"),
            "product by node affinity": (product_by_affinity, "NVIDIA-B200"),
            "Deployment replicas": (many_replicas, "quota"),
            "KEDA bounds": (keda_bounds, "quota"),
            "KEDA without maxReplicaCount": (keda_default_max, "quota"),
            "KEDA maxReplicaCount not a number": (keda_max_as_text, "not a whole number"),
            "KEDA idleReplicaCount": (keda_idle, "idleReplicaCount 0, below its "
                                      "minReplicaCount 1"),
            "KEDA without minReplicaCount": (keda_default_min, "minReplicas: Input should be "
                                             "greater than or equal to 1 (got 0)"),
            "a second workload": (decoy_after, "2 workloads"),
            "a kind promoter does not render": (other_kind, "StatefulSet"),
            "two namespaces": (other_namespace, "2 namespaces"),
            "another environment's namespace": (elsewhere, "not in production's")}


@pytest.mark.parametrize("edit", sorted(_edits()))
def test_what_a_hand_edited_overlay_claims_is_judged_whole(edit: str) -> None:
    """The gate is the authoritative check of a hand-edited MR: the whole claim counts (every
    container, the widest replica bound of HPA, KEDA or the Deployment itself, the GPU product
    however it is selected), and what it cannot judge (more workloads, other kinds, other
    namespaces) is denied, not read partly."""
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    settings = settings.model_copy(update={"policy": settings.policy.model_copy(
        update={"team_gpu_quota": {"devtools": 12}})})
    change, reason = _edits()[edit]  # type: ignore[misc]
    assert _production_decision(settings, _as_rendered).allowed
    decision = _production_decision(settings, change)
    assert not decision.allowed, edit
    assert reason in " ".join(decision.reasons), decision.reasons


def _as_rendered(docs: list[dict]) -> None:
    """No edit: the overlay as promoter rendered it."""


def _production_decision(settings: Any, change: Callable[[list[dict]], None],
                         model: str = "code-assistant") -> Any:
    """The gate's decision on ``model``'s production overlay edited by ``change``."""
    from promoter.gitops.policy import check_tree

    production = ROOT / f"manifests/{model}/overlays/production"

    def build(overlay: Path) -> str:
        if overlay.resolve() != production.resolve():
            return _built(overlay)
        docs = _documents(overlay)
        change(docs)
        out = io.StringIO()
        YAML().dump_all(docs, out)
        return out.getvalue()

    verdicts = {v.env: v for v in check_tree(settings, [production.parent.parent], build)}
    return verdicts["production"].decision


# --------------------------------------------- placement: node selector and ORed affinity terms

REGION = "topology.kubernetes.io/region"
PRODUCT = "nvidia.com/gpu.product"
H100 = "NVIDIA-H100-80GB-HBM3"


def _in(key: str, *values: str) -> dict:
    return {"key": key, "operator": "In", "values": list(values)}


def _placed(terms: list[dict], selector: dict[str, str] | None = None
            ) -> Callable[[list[dict]], None]:
    """An edit giving the Deployment's pod these required node-affinity terms and adding
    ``selector`` to its node selector."""
    def change(docs: list[dict]) -> None:
        pod = _workload(docs)["spec"]["template"]["spec"]
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": terms}}} if terms else {}
        pod["nodeSelector"].update(selector or {})
        for key in [key for key, value in pod["nodeSelector"].items() if value is None]:
            del pod["nodeSelector"][key]     # None: taken out of the node selector
    return change


def _placement_edits() -> dict[str, tuple[Callable[[list[dict]], None], str | None]]:
    """Each an edit and the reason it is denied (None: allowed), with production allowing
    only us-east-1 and H100s. Kubernetes ORs the terms and ANDs them with the node selector."""
    east, linux = _in(REGION, "us-east-1"), _in("kubernetes.io/os", "linux")
    return {
        "a second term without the region": (
            _placed([{"matchExpressions": [east]}, {"matchExpressions": [linux]}]),
            f"term 2 of 2 does not pin {REGION}"),
        "a second term on a node name only": (
            _placed([{"matchExpressions": [east]},
                     {"matchFields": [{"key": "metadata.name", "operator": "In",
                                       "values": ["gpu-node-7"]}]}]),
            f"term 2 of 2 does not pin {REGION}"),
        "a second term without the GPU product, which the node selector pins": (
            _placed([{"matchExpressions": [east, _in(PRODUCT, H100)]},
                     {"matchExpressions": [east]}]), None),
        "a second term without the GPU product, and none in the node selector": (
            _placed([{"matchExpressions": [east, _in(PRODUCT, H100)]},
                     {"matchExpressions": [east]}], {PRODUCT: None}),  # type: ignore[dict-item]
            f"term 2 of 2 does not pin {PRODUCT}"),
        "a second term without the region, which the node selector pins": (
            _placed([{"matchExpressions": [east]}, {"matchExpressions": [linux]}],
                    {REGION: "us-east-1"}), None),
        "a region narrowed by NotIn and Exists": (
            _placed([{"matchExpressions": [
                _in(REGION, "us-east-1", "eu-west-1"),
                {"key": REGION, "operator": "NotIn", "values": ["eu-west-1"]},
                {"key": REGION, "operator": "Exists"}]}]), None),
        "a region by NotIn alone": (
            _placed([{"matchExpressions": [
                {"key": REGION, "operator": "NotIn", "values": ["eu-west-1"]}]}]),
            "requires pinning"),       # any region but one: not pinned
        "a second term in another region": (
            _placed([{"matchExpressions": [east]},
                     {"matchExpressions": [_in(REGION, "eu-west-1")]}]),
            "eu-west-1 not allowed"),
        "a node selector in another region": (
            _placed([], {REGION: "eu-west-1"}), "eu-west-1 not allowed"),
        "every term pinned to an allowed region": (
            _placed([{"matchExpressions": [east, linux]}, {"matchExpressions": [east]}]), None),
        "the region by node selector": (_placed([], {REGION: "us-east-1"}), None),
        "the node selector narrowing the affinity's products": (
            _placed([{"matchExpressions": [east, _in(PRODUCT, H100, "NVIDIA-B200")]}]), None),
    }


@pytest.mark.parametrize("edit", sorted(_placement_edits()))
def test_placement_is_what_every_affinity_term_and_the_node_selector_allow(
        edit: str, tmp_path: Path) -> None:
    """A pod may run on any node one of its required node-affinity terms matches and its node
    selector matches too: a term that leaves the region or GPU product open lets it run
    anywhere, and is denied; otherwise the union of the terms, narrowed by the node
    selector, is judged."""
    config = tmp_path / "promoter.yaml"
    raw = YAML(typ="safe").load((EXAMPLES / "promoter.yaml").read_text())
    raw["environments"]["production"]["allowed_regions"] = ["us-east-1"]
    raw["environments"]["production"]["allowed_gpu_types"] = [H100]
    with config.open("w") as handle:
        YAML().dump(raw, handle)
    pin_east = _placed([{"matchExpressions": [_in(REGION, "us-east-1")]}])
    change, reason = _placement_edits()[edit]

    def pinned_then_changed(docs: list[dict]) -> None:
        pin_east(docs)   # as promoter renders an environment with allowed_regions
        change(docs)

    settings = load_settings(config, environ={})
    assert _production_decision(settings, pin_east).allowed
    decision = _production_decision(settings, pinned_then_changed)
    if reason is None:
        assert decision.allowed, decision.reasons
    else:
        assert not decision.allowed, edit
        assert reason in " ".join(decision.reasons), decision.reasons


# --------------------------------------------- InferenceService components

@pytest.mark.parametrize("component", ["transformer", "explainer"])
def test_an_inference_service_component_beside_the_predictor_is_denied(component: str) -> None:
    """A transformer or explainer runs pods of its own (here 8 GPUs x 10 replicas, far over
    assistants' quota): promoter renders only the predictor, so the gate refuses the shape
    rather than judge the predictor alone."""
    def add_component(docs: list[dict]) -> None:
        service = next(d for d in docs if d["kind"] == "InferenceService")
        service["spec"][component] = {"minReplicas": 10, "maxReplicas": 10, "containers": [
            {"name": "gpu-hog", "image": "registry.example.com/models/llm-chat@sha256:" + "2" * 64,
             "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}

    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    settings = settings.model_copy(update={"policy": settings.policy.model_copy(
        update={"team_gpu_quota": {"assistants": 8}})})
    assert _production_decision(settings, _as_rendered, "llm-chat").allowed
    decision = _production_decision(settings, add_component, "llm-chat")
    assert not decision.allowed
    assert f"InferenceService/llm-chat has spec.{component}" in " ".join(decision.reasons)


# --------------------------------------------- the owner, whatever cost_labels names keys

def _gate_on_a_tree_rendered_with(tmp_path: Path, cost_labels: str) -> list:
    """Verdicts of the gate on fraud-detector (team risk-ml) rendered with ``cost_labels``
    (the example config's block replaced) and judged with the same config."""
    from promoter import rendering
    from promoter.core.render import ImagePin
    from promoter.gitops.policy import check_tree

    example = (EXAMPLES / "promoter.yaml").read_text()
    default = ("cost_labels:                               # pod label key per role, for "
               "OpenCost / Kubecost\n  team: team\n  cost_center: cost-center\n"
               "  environment: env\n  model: app\n  runtime: runtime\n")
    assert default in example
    config = tmp_path / "promoter.yaml"
    config.write_text(example.replace(default, cost_labels))
    settings = load_settings(config, environ={})
    tree = tmp_path / "manifests"
    image = ImagePin("registry.example.com/models/fraud-detector", "sha256:" + "ab" * 32)
    for env in ("staging", "production"):
        request = rendering.build_request(settings, load_intent_file(EXAMPLES /
                                                                     "fraud-detector.yaml"),
                                          env, origin="test", image=image)
        rendering.write_tree(tree, rendering.renderer(settings).render(request))
    return check_tree(settings, [tree], _built)


@pytest.mark.parametrize("cost_labels", [
    "cost_labels:\n  team: owner-team\n",
    "cost_labels:\n  team: owner-team\n  model: team\n",
], ids=["team key renamed", "team key holds the model"])
def test_the_owner_is_promoters_own_label_not_a_configurable_cost_label(
        tmp_path: Path, cost_labels: str) -> None:
    """The gate read the owner from labels literally named `team` and `cost-center`: with
    the team's key renamed every overlay lacked an owner, and with `team` another role's key
    the workload was judged for a team named after the model."""
    verdicts = _gate_on_a_tree_rendered_with(tmp_path, cost_labels)
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert verdict.decision.allowed, verdict.decision.reasons


def test_a_plain_team_label_does_not_change_the_team_judged(tmp_path: Path) -> None:
    """A hand-edited `team` label (the default cost label key) is not promoter's: the gate
    judges the team promoter.dev/team names, and a workload without that label is refused."""
    overlay = ROOT / "manifests/llm-chat/overlays/production"
    documents = _documents(overlay)
    workload = next(d for d in documents if d["kind"] == "InferenceService")
    workload["metadata"]["labels"]["team"] = "someone-else"
    owner = declared_intent(documents)["spec"]["owner"]
    assert owner == {"team": "assistants", "costCenter": "cc-7731"}
    del workload["metadata"]["labels"]["promoter.dev/team"]
    with pytest.raises(UserError, match=r"has no promoter\.dev/team label"):
        declared_intent(documents)


@pytest.mark.parametrize(("edit", "said"), [
    ("  promoter.dev/team: assistants\n", "is 'assistants', the team whose AppProject"),
    ("", "has no commonAnnotations promoter.dev/team"),
])
def test_the_team_argo_cd_files_an_overlay_under_is_the_team_judged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, said: str) -> None:
    """The ApplicationSet picks the AppProject from the overlay's commonAnnotations team; the
    gate judged the workloads' label only, so an MR keeping risk-ml's label and naming
    another team there passed, and Argo CD deployed it under that team's project (without
    one, the whole ApplicationSet stops generating)."""
    tree = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests/fraud-detector", tree / "fraud-detector")
    kustomization = tree / "fraud-detector/overlays/production/kustomization.yaml"
    text = kustomization.read_text()
    assert "  promoter.dev/team: risk-ml\n" in text
    kustomization.write_text(text.replace("  promoter.dev/team: risk-ml\n", edit))
    code, out, _ = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                      "policy", str(tree), "--output", "json")
    assert code == 4
    verdicts = {Path(v["overlay"]).name: v for v in json.loads(out)}
    assert verdicts["staging"]["allowed"] and not verdicts["production"]["allowed"]
    assert said in " ".join(verdicts["production"]["reasons"])


def test_without_teams_the_shared_project_reads_no_team_annotation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without policy.teams the ApplicationSet names one project and never reads the
    annotation: an overlay without it (or naming another team) is no concern of the gate."""
    settings = YAML(typ="safe").load((EXAMPLES / "promoter.yaml").read_text())
    del settings["policy"]["teams"]
    config = tmp_path / "promoter.yaml"
    with config.open("w") as handle:
        YAML().dump(settings, handle)
    tree = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests/fraud-detector", tree / "fraud-detector")
    kustomization = tree / "fraud-detector/overlays/production/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(
        "  promoter.dev/team: risk-ml\n", ""))
    code, out, err = cli_runner(capsys)("--config", str(config), "gitops", "policy", str(tree),
                                        "--output", "json")
    assert code == 0, out + err
    assert all(verdict["allowed"] for verdict in json.loads(out))
