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
