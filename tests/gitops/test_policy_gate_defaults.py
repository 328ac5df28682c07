"""`promoter gitops policy`: placement is what the tree declares, never promoter.yaml's defaults.

The gate read an overlay back into a partial intent and resolved it like an intent, so
``defaults`` (and an environment's) filled in what the manifests left unset: a pod whose
nodeSelector and affinity a merge request removed was judged as pinned to the default GPU type
and region, and allowed, while Kubernetes could place it anywhere. Before a render the defaults
are right (promoter writes them into the manifests); the gate judges the tree as it is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from promoter import rendering
from promoter.gitops.policy import check_tree
from promoter.settings import Settings, load_settings
from tests.conftest import EXAMPLES, requires_kubectl
from tests.gitops.test_policy_gate import _as_rendered, _production_decision

pytestmark = requires_kubectl

GPU_TYPE = "gpu type: production allows only"
REGIONS = "regions: production requires pinning to one of eu-west-1, us-east-1"
EXAMPLE_NAMES = ("fraud-detector", "llm-chat", "vision-segmenter", "code-assistant", "ad-ranker")


def _settings(tmp_path: Path, defaults: dict[str, Any] | None = None,
              quota: dict[str, int] | None = None, regions: bool = True) -> Settings:
    """The example promoter.yaml, production restricted to two regions (unless not
    ``regions``), with ``defaults`` merged into its own and ``quota`` as the team GPU quota."""
    raw = YAML(typ="safe").load((EXAMPLES / "promoter.yaml").read_text())
    if regions:
        raw["environments"]["production"]["allowed_regions"] = ["eu-west-1", "us-east-1"]
    for key, value in (defaults or {}).items():
        raw["defaults"][key] = {**raw["defaults"].get(key, {}), **value} \
            if isinstance(value, dict) else value
    if quota is not None:
        raw["policy"]["team_gpu_quota"] = quota
    config = tmp_path / "promoter.yaml"
    with config.open("w") as handle:
        YAML().dump(raw, handle)
    return load_settings(config, environ={})


PINNING_DEFAULTS = {"resources": {"gpu": {"count": 1, "type": "NVIDIA-L40S"}},
                    "regions": ["eu-west-1"]}


def _unpinned(docs: list[dict]) -> None:
    """The reviewer's edit: the predictor's nodeSelector and node affinity removed."""
    predictor = next(d for d in docs if d["kind"] == "InferenceService")["spec"]["predictor"]
    predictor.pop("nodeSelector")
    predictor.pop("affinity")


@pytest.mark.parametrize("defaults", [None, PINNING_DEFAULTS], ids=["none", "pinning"])
def test_defaults_do_not_pin_a_pod_the_overlay_leaves_unpinned(
        tmp_path: Path, defaults: dict[str, Any] | None) -> None:
    settings = _settings(tmp_path, defaults)
    assert _production_decision(settings, _as_rendered, "vision-segmenter").allowed
    decision = _production_decision(settings, _unpinned, "vision-segmenter")
    reasons = " ".join(decision.reasons)
    assert not decision.allowed
    assert GPU_TYPE in reasons and REGIONS in reasons, reasons


def test_a_default_gpu_count_is_not_claimed_by_a_pod_without_gpus(tmp_path: Path) -> None:
    """fraud-detector's pod names no GPU: it claims none, whatever the defaults ask for (the
    gate charged its team 2 GPUs a replica, and judged a GPU type it never runs on)."""
    settings = _settings(tmp_path, {"resources": {"gpu": {"count": 2}}}, quota={"risk-ml": 0},
                         regions=False)
    decision = _production_decision(settings, _as_rendered, "fraud-detector")
    assert decision.allowed, decision.reasons


def _without_placement(intent: dict[str, Any]) -> dict[str, Any]:
    """llm-chat's intent asking for a GPU but naming no type or region: the defaults' to fill."""
    del intent["spec"]["resources"]["gpu"]["type"]
    intent["spec"].pop("regions", None)
    return intent


@pytest.mark.parametrize("intent_of", [lambda intent: intent, _without_placement],
                         ids=["examples", "llm-chat without placement"])
def test_what_promoter_renders_from_the_defaults_passes(
        tmp_path: Path, intent_of: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Rendered, the default GPU type and region are the node selector and affinity the gate
    reads: every example (and one that names neither) rendered with them passes."""
    settings = _settings(tmp_path, PINNING_DEFAULTS)
    tree = tmp_path / "manifests"
    names = EXAMPLE_NAMES if intent_of.__name__ == "<lambda>" else ("llm-chat",)
    for name in names:
        intent = intent_of(rendering.load_intent_file(EXAMPLES / f"{name}.yaml"))
        for env in ("staging", "production"):
            request = rendering.build_request(settings, intent, env, origin=name)
            rendering.write_tree(tree, rendering.renderer(settings).render(request))

    def build(overlay: Path) -> str:
        return subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                              text=True, check=True).stdout

    verdicts = check_tree(settings, [tree], build)
    assert len(verdicts) == 2 * len(names)
    assert all(v.decision.allowed for v in verdicts), \
        {str(v.overlay): v.decision.reasons for v in verdicts if not v.decision.allowed}
