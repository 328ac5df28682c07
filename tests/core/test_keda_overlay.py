"""Carrying an accepted ScaledObject forward: its target follows the model's platform."""

from __future__ import annotations

import pytest

from promoter.core import keda_overlay
from promoter.errors import UserError


def test_the_target_is_set_in_block_and_flow_form_and_nothing_else_changes() -> None:
    block = ("spec:\n  scaleTargetRef:\n    kind: Deployment\n    name: llm  # old\n"
             "  triggers:\n  - metadata: {name: llm}\n")
    assert keda_overlay.retargeted(block, "llm-predictor") == (
        "spec:\n  scaleTargetRef:\n    kind: Deployment\n    name: llm-predictor\n"
        "  triggers:\n  - metadata: {name: llm}\n")
    assert keda_overlay.retargeted("spec:\n  scaleTargetRef: {name: llm-predictor}\n", "llm") \
        == "spec:\n  scaleTargetRef: {name: llm}\n"


def test_a_scaled_object_without_a_target_name_is_refused() -> None:
    with pytest.raises(UserError, match=r"no spec\.scaleTargetRef\.name"):
        keda_overlay.retargeted("spec:\n  scaleTargetRef:\n    kind: Deployment\n"
                                "  minReplicaCount: 1\n", "llm")


def test_scale_target_per_platform() -> None:
    assert keda_overlay.scale_target("kubernetes", "llm") == "llm"
    assert keda_overlay.scale_target("kserve", "llm") == "llm-predictor"


def test_a_missing_max_replica_count_is_added_under_spec() -> None:
    """Left out, KEDA scales to its default of 100: the intent's bound must be written."""
    accepted = ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nspec:\n"
                "  scaleTargetRef:\n    name: llm\n  minReplicaCount: 2\n  triggers: []\n")
    assert keda_overlay.bounded(accepted, 1, 4) == (
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nspec:\n  maxReplicaCount: 4\n"
        "  scaleTargetRef:\n    name: llm\n  minReplicaCount: 1\n  triggers: []\n")


def test_an_existing_max_replica_count_is_rewritten_not_added_twice() -> None:
    accepted = "spec:\n  # maxReplicaCount: left to KEDA?\n  maxReplicaCount: 40\n"
    assert keda_overlay.bounded(accepted, 1, 4) == \
        "spec:\n  # maxReplicaCount: left to KEDA?\n  maxReplicaCount: 4\n"


@pytest.mark.parametrize("accepted", [
    "spec:\n  maxReplicaCount: \"40\"\n",                 # quoted: the line pattern misses it
    "spec:\n  maxReplicaCount: 40  # reviewed\n",
    "spec: {scaleTargetRef: {name: llm}, maxReplicaCount: 40}\n",
    "spec: {scaleTargetRef: {name: llm}}\n",              # nowhere to add the bound
    "kind: ScaledObject\n",
])
def test_a_max_replica_count_promoter_cannot_bound_is_refused(accepted: str) -> None:
    with pytest.raises(UserError, match="maxReplicaCount"):
        keda_overlay.bounded(accepted, 1, 4)
