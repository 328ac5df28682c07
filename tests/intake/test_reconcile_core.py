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
    previous = {"staging": Observed(None, "4", "Staging"),
                "production": Observed(None, None, "Production")}
    current = observe(TRIGGERS, {}, None, previous)  # None: no version changed since last pass
    assert current == previous
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


def test_a_target_the_newest_job_did_not_ask_for_is_planned_though_the_record_agrees() -> None:
    """Recorded at 1; a webhook's job moved production to 2; the alias went back to 1 with
    its hook lost: the record still says 1, the newest job says otherwise."""
    from promoter.core.jobs import JobKey

    record = {"production": Observed("1", None)}
    asked = {"production": JobKey("m", "2", "production", "promote")}
    [event] = plan("m", record, record, asked)
    assert (event.action, event.env, event.version) == ("promote", "production", "1")
    assert "last job was for version 2" in event.reason
    # What the newest job asked for is the target: nothing to do.
    assert plan("m", record, record, {"production": JobKey("m", "1", "production",
                                                           "promote")}) == []
    # The alias deleted with its hook lost, never recorded: the job's promotion is undone.
    [removal] = plan("m", {}, {}, asked)
    assert (removal.action, removal.env) == ("decommission", "production")
    assert plan("m", {}, {}, {"production": JobKey("m", "*", "production",
                                                   "decommission")}) == []


def test_a_record_read_for_another_stage_than_the_triggers_is_outdated() -> None:
    from promoter.core.reconcile import stages_outdated

    read = {"staging": Observed(None, "4", "Staging"),
            "production": Observed(None, None, "production")}    # nothing in it; case aside
    assert not stages_outdated(TRIGGERS, read)
    assert stages_outdated(TRIGGERS, {"staging": read["staging"]})   # production added
    assert stages_outdated({**TRIGGERS, "staging": Trigger(stage="Production")}, read)
    assert stages_outdated(TRIGGERS, {**read, "staging": Observed(None, "4")})  # older record
    assert not stages_outdated({"canary": Trigger(alias="canary")}, {})


def test_a_stage_read_is_recorded_with_its_stage_even_when_empty() -> None:
    current = observe(TRIGGERS, {}, {"Staging": "6"}, {})
    assert current == {"staging": Observed(None, "6", "Staging"),
                       "production": Observed(None, None, "Production")}
    assert [(e.env, e.version) for e in plan("m", current, {})] == [("staging", "6")]


def test_only_a_model_some_newest_job_deploys_is_deployed_by_jobs() -> None:
    from promoter.core.jobs import JobKey
    from promoter.core.reconcile import deployed_by_jobs

    assert deployed_by_jobs({
        "gone": {"production": JobKey("gone", "*", "production", "decommission")},
        "half": {"production": JobKey("half", "*", "production", "decommission"),
                 "staging": JobKey("half", "2", "staging", "promote")},
    }) == {"half"}
