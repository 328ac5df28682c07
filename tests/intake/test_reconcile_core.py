"""The pure reconcile decisions: targets per environment and what differs."""

from __future__ import annotations

from promoter.core.reconcile import Observed, observe, plan
from promoter.settings import Trigger

TRIGGERS = {"staging": Trigger(alias="staging", stage="Staging"),
            "production": Trigger(alias="production", stage="Production"),
            "canary": Trigger(alias="canary")}


def test_an_alias_wins_over_the_legacy_stage() -> None:
    current = observe(TRIGGERS, {"production": "7"}, {"Production": "5", "Staging": "6"}, {})
    assert current["production"].target == "7"
    assert current["staging"].target == "6"
    assert "canary" not in current


def test_unchanged_versions_keep_their_recorded_stage_targets() -> None:
    previous = {"staging": Observed(None, "4")}
    current = observe(TRIGGERS, {}, None, previous)  # None: no version changed since last pass
    assert current == {"staging": Observed(None, "4")}
    assert plan("m", current, previous) == []


def test_differences_become_promotions_and_decommissions() -> None:
    previous = {"staging": Observed("3", None), "production": Observed(None, "2")}
    current = {"staging": Observed("4", None), "canary": Observed("4", None)}
    planned = {(e.action, e.env, e.version) for e in plan("m", current, previous)}
    assert planned == {("promote", "staging", "4"), ("promote", "canary", "4"),
                       ("decommission", "production", None)}
    assert all(e.source == "reconcile" for e in plan("m", current, previous))


def test_a_stage_named_in_another_case_still_matches() -> None:
    assert observe(TRIGGERS, {}, {"production": "9"}, {})["production"].stage_version == "9"
