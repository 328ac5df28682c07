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


def test_a_missing_min_replica_count_is_added_under_spec() -> None:
    """Left out, KEDA's default is 0: outside the cron windows the deployment scaled to zero,
    though no intent allows minReplicas below 1 (the reviewer's carried-forward file)."""
    accepted = ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: llm\n"
                "spec:\n  scaleTargetRef:\n    name: llm\n  maxReplicaCount: 8\n  triggers:\n"
                "  - type: cron\n    metadata:\n      desiredReplicas: \"6\"\n")
    assert keda_overlay.bounded(accepted, 2, 5) == (
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: llm\n"
        "spec:\n  minReplicaCount: 2\n  scaleTargetRef:\n    name: llm\n"
        "  maxReplicaCount: 5\n  triggers:\n  - type: cron\n    metadata:\n"
        "      desiredReplicas: \"5\"\n")
    neither = "kind: ScaledObject\nspec:\n  scaleTargetRef:\n    name: llm\n"
    assert keda_overlay.bounded(neither, 1, 4) == (
        "kind: ScaledObject\nspec:\n  minReplicaCount: 1\n  maxReplicaCount: 4\n"
        "  scaleTargetRef:\n    name: llm\n")


def test_an_existing_max_replica_count_is_rewritten_not_added_twice() -> None:
    accepted = ("spec:\n  # maxReplicaCount: left to KEDA?\n  maxReplicaCount: 40\n"
                "  minReplicaCount: 3\n")
    assert keda_overlay.bounded(accepted, 1, 4) == (
        "spec:\n  # maxReplicaCount: left to KEDA?\n  maxReplicaCount: 4\n"
        "  minReplicaCount: 1\n")


def test_bounds_with_a_trailing_comment_are_rewritten_and_keep_the_comment() -> None:
    """Before, only maxReplicaCount in this form was refused: minReplicaCount 6 and a cron
    window's desiredReplicas "6" stayed above an intent's maxReplicas 4 (KEDA rejects min >
    max), and the ScaledObject was accepted."""
    accepted = ("spec:\n  minReplicaCount: 6  # business hours\n"
                "  maxReplicaCount: 8 # reviewed\n  triggers:\n  - type: cron\n"
                "    metadata:\n      desiredReplicas: \"6\"\t# peak\n")
    assert keda_overlay.bounded(accepted, 2, 4) == (
        "spec:\n  minReplicaCount: 2  # business hours\n"
        "  maxReplicaCount: 4 # reviewed\n  triggers:\n  - type: cron\n"
        "    metadata:\n      desiredReplicas: \"4\"\t# peak\n")


def test_an_idle_replica_count_is_dropped_whole() -> None:
    """KEDA scales to idleReplicaCount (below minReplicaCount) whenever no trigger is active:
    kept, it scaled the model to zero, which no intent allows. The line goes, comment and all;
    one that is spec's only field leaves spec a block the bounds are added to."""
    accepted = ("spec:\n  scaleTargetRef:\n    name: llm\n  idleReplicaCount: 0  # nights\n"
                "  minReplicaCount: 3\n  maxReplicaCount: 8\n")
    assert keda_overlay.bounded(accepted, 2, 4) == (
        "spec:\n  scaleTargetRef:\n    name: llm\n  minReplicaCount: 2\n"
        "  maxReplicaCount: 4\n")
    assert keda_overlay.bounded("kind: ScaledObject\nspec:\n  idleReplicaCount: '0'\n", 1, 4) \
        == "kind: ScaledObject\nspec:\n  minReplicaCount: 1\n  maxReplicaCount: 4\n"


@pytest.mark.parametrize("accepted", [
    "spec: {idleReplicaCount: 0, minReplicaCount: 1}\n",
    "spec:\n  minReplicaCount: 1\n  idleReplicaCount:\n    0\n",
    "spec:\n  minReplicaCount: 1\n  idleReplicaCount: 0# not a comment\n",
])
def test_an_idle_replica_count_promoter_cannot_drop_is_refused(accepted: str) -> None:
    with pytest.raises(UserError, match="idleReplicaCount"):
        keda_overlay.bounded(accepted, 1, 4)


@pytest.mark.parametrize(("accepted", "field"), [
    ("spec:\n  minReplicaCount: \"6\"\n  maxReplicaCount: 8\n", "minReplicaCount"),
    ("spec: {minReplicaCount: 6}\n", "minReplicaCount"),
    ("spec:\n  minReplicaCount: 6 # 6#\n  maxReplicaCount: 8\n  triggers:\n"
     "  - type: cron\n    metadata: {desiredReplicas: \"6\", start: 0 8 * * *}\n",
     "desiredReplicas"),
    ("spec:\n  maxReplicaCount: 8\n  triggers:\n  - type: cron\n    metadata:\n"
     "      desiredReplicas: 6 replicas\n", "desiredReplicas"),
])
def test_a_min_or_desired_replica_count_promoter_cannot_bound_is_refused(
        accepted: str, field: str) -> None:
    with pytest.raises(UserError, match=field):
        keda_overlay.bounded(accepted, 2, 4)


@pytest.mark.parametrize("accepted", [
    "spec:\n  maxReplicaCount: \"40\"\n",                 # quoted: the line pattern misses it
    "spec:\n  maxReplicaCount: 40# not a comment: YAML reads \"40# not…\"\n",
    "spec: {scaleTargetRef: {name: llm}, maxReplicaCount: 40}\n",
    "spec: {scaleTargetRef: {name: llm}}\n",              # nowhere to add the bound
    "kind: ScaledObject\n",
])
def test_a_max_replica_count_promoter_cannot_bound_is_refused(accepted: str) -> None:
    with pytest.raises(UserError, match="maxReplicaCount"):
        keda_overlay.bounded(accepted, 1, 4)


def test_a_file_with_windows_line_endings_is_bounded_too() -> None:
    """The field patterns end at "\\n": before, "\\r" left maxReplicaCount: 50 in place (the
    file carried forward unbounded), and a file without the field had no spec: block."""
    with_max = ("apiVersion: keda.sh/v1alpha1\r\nkind: ScaledObject\r\nspec:\r\n"
                "  minReplicaCount: 1\r\n  maxReplicaCount: 50\r\n")
    assert "maxReplicaCount: 8\n" in keda_overlay.bounded(with_max, 1, 8)
    without = "kind: ScaledObject\r\nspec:\r\n  minReplicaCount: 1\r\n"
    assert "maxReplicaCount: 8\n" in keda_overlay.bounded(without, 1, 8)


def test_a_file_of_several_documents_is_refused_one_with_a_leading_marker_is_not() -> None:
    """The bound would go into whichever document came first (a TriggerAuthentication), and
    the ScaledObject would keep KEDA's default of 100."""
    several = ("kind: TriggerAuthentication\nspec:\n  secretTargetRef: []\n---\n"
               "kind: ScaledObject\nspec:\n  minReplicaCount: 1\n")
    with pytest.raises(UserError, match="several YAML documents"):
        keda_overlay.bounded(several, 1, 8)
    assert "maxReplicaCount: 8" in keda_overlay.bounded(
        "---\nkind: ScaledObject\nspec:\n  minReplicaCount: 1\n", 1, 8)
