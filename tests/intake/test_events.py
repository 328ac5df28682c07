"""Normalisation of real MLflow deliveries and documented Databricks payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promoter.core.events import PayloadError, from_databricks, from_mlflow
from promoter.settings import Trigger
from tests.intake.conftest import capture, databricks_body

DEFAULT = {"staging": Trigger(alias="staging", stage="Staging"),
           "production": Trigger(alias="production", stage="Production")}


def mlflow(name: str, triggers: Any = None) -> list[Any]:
    return from_mlflow(json.loads(capture(name)["body"]), triggers or DEFAULT)


def test_alias_created_promotes_the_version_into_the_env_of_that_alias() -> None:
    [event] = mlflow("model_version_alias.created.json")
    assert (event.action, event.model, event.version, event.env) == (
        "promote", "promo-demo", "2", "production")
    assert event.source == "mlflow" and event.trigger == "model_version_alias.created"
    assert event.event_time == pytest.approx(1795862969.980965)


def test_repointing_an_alias_promotes_the_new_version() -> None:
    [event] = mlflow("model_version_alias.created.3.json")  # production moved v2 → v1
    assert (event.action, event.version, event.env) == ("promote", "1", "production")


def test_alias_deleted_decommissions_without_a_version() -> None:
    triggers = {**DEFAULT, "canary": Trigger(alias="champion")}
    [event] = mlflow("model_version_alias.deleted.json", triggers)
    assert (event.action, event.model, event.version, event.env) == (
        "decommission", "promo-demo", None, "canary")


def test_an_alias_no_environment_uses_is_ignored_with_the_reason() -> None:
    [event] = mlflow("model_version_alias.created.2.json")  # alias "champion"
    assert event.action == "ignore"
    assert "champion" in event.reason and "no environment" in event.reason


def test_the_mapping_comes_from_the_configured_triggers() -> None:
    triggers = {"prod-eu": Trigger(alias="production"), "prod-us": Trigger(alias="production")}
    events = mlflow("model_version_alias.created.json", triggers)
    assert [(e.action, e.env) for e in events] == [("promote", "prod-eu"), ("promote", "prod-us")]


@pytest.mark.parametrize("name", [
    "model_version.created.json", "model_version.created.2.json", "model_version_tag.set.json",
    "model_version_tag.deleted.json", "registered_model.created.json",
    "test_webhook.model_version.created.json", "test_webhook.model_version_alias.created.json",
])
def test_other_registry_events_are_ignored_with_a_reason(name: str) -> None:
    [event] = mlflow(name)
    assert event.action == "ignore" and event.reason


@pytest.mark.parametrize(("body", "message"), [
    ([], "body must be a JSON object"),
    ({"entity": "model_version_alias", "action": "created", "data": []}, "data must be"),
    ({"entity": "model_version_alias", "action": "created",
      "data": {"name": "m", "alias": "production", "version": "v2"}}, "positive integer"),
    ({"entity": "model_version_alias", "action": "created",
      "data": {"name": "m\n", "alias": "production", "version": "2"}}, "control or text-dir"),
    ({"entity": "model_version_alias", "action": "created",
      "data": {"name": "ranker\u202e dorp", "alias": "production", "version": "2"}},
     "text-direction characters"),
    ({"entity": "model_version_alias", "action": "created",
      "data": {"name": "ranker\x9b2J", "alias": "production", "version": "2"}},
     "control or text-direction"),
    ({"entity": "model_version_alias", "action": "deleted", "timestamp": "yesterday",
      "data": {"name": "m", "alias": "production"}}, "ISO-8601"),
])
def test_malformed_mlflow_payloads_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        from_mlflow(body, DEFAULT)


def databricks(name: str) -> list[Any]:
    return from_databricks(json.loads(databricks_body(name)), DEFAULT)


def test_databricks_transition_into_production_promotes() -> None:
    [event] = databricks("transitioned_stage.production.json")
    assert (event.action, event.model, event.version, event.env, event.source) == (
        "promote", "fraud-detector", "8", "production", "databricks")
    assert event.event_time == pytest.approx(1589859029.343)


def test_databricks_staging_to_production_promotes_one_and_decommissions_the_other() -> None:
    events = databricks("transitioned_stage.staging_to_production.json")
    assert [(e.action, e.env, e.version) for e in events] == [
        ("promote", "production", "9"), ("decommission", "staging", "9")]


def test_databricks_archiving_decommissions_the_stage_it_left() -> None:
    [event] = databricks("transitioned_to_archived.json")
    assert (event.action, event.env, event.version) == ("decommission", "production", "8")


@pytest.mark.parametrize(("from_stage", "left"), [
    ("Production", ["production"]), (None, ["staging", "production"])])
def test_databricks_move_to_stage_none_decommissions_the_stage_it_left(
        from_stage: str | None, left: list[str]) -> None:
    """Stage "None" is a stage Databricks moves versions to (out of every stage): not a
    missing to_stage, which would answer 200 and lose the decommission for good."""
    body = json.loads(databricks_body("transitioned_stage.production.json"))
    body["to_stage"] = "None"
    body.pop("from_stage", None)
    if from_stage is not None:
        body["from_stage"] = from_stage
    events = from_databricks(body, DEFAULT)
    assert sorted((e.action, e.env, e.version) for e in events) == sorted(
        ("decommission", env, "8") for env in left)


def test_databricks_without_a_to_stage_is_ignored_as_missing() -> None:
    body = json.loads(databricks_body("transitioned_stage.production.json"))
    del body["to_stage"]
    [event] = from_databricks(body, DEFAULT)
    assert event.action == "ignore" and event.reason == "to_stage is missing"


@pytest.mark.parametrize("name", ["transition_request_created.json", "tag_set.json"])
def test_databricks_requests_and_tags_are_ignored(name: str) -> None:
    [event] = databricks(name)
    assert event.action == "ignore" and event.model == "fraud-detector"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20)
envelopes = st.fixed_dictionaries({
    "entity": st.sampled_from(["model_version_alias", "model_version", "registered_model",
                               "prompt_alias", "x"]) | st.text(max_size=8),
    "action": st.sampled_from(["created", "deleted", "set"]) | st.text(max_size=8),
    "data": st.dictionaries(st.sampled_from(["name", "alias", "version", "key"]), json_values,
                            max_size=4) | json_values,
}, optional={"timestamp": st.text(max_size=30) | json_values})


@settings(max_examples=300, deadline=None)
@given(envelopes | json_values)
def test_any_json_is_either_normalised_or_refused_as_a_payload_error(body: Any) -> None:
    try:
        events = from_mlflow(body, DEFAULT)
    except PayloadError:
        return
    assert events and all(e.action in ("promote", "decommission", "ignore") for e in events)
    assert all(e.version for e in events if e.action == "promote")


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"event": st.sampled_from([
    "MODEL_VERSION_TRANSITIONED_STAGE", "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", "OTHER"])},
    optional={"model_name": json_values, "version": json_values, "to_stage": json_values,
              "from_stage": json_values, "event_timestamp": json_values}) | json_values)
def test_any_databricks_json_is_normalised_or_refused(body: Any) -> None:
    try:
        events = from_databricks(body, DEFAULT)
    except PayloadError:
        return
    assert events
