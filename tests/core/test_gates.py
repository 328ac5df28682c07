"""Promotion gates from promoter.yaml: a table per rule (allowed and denied, with the message a
model owner reads), and every kind of bad gate refused when the configuration loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promoter.core.cel import CelRule
from promoter.core.gates import CelGate, GateFacts, MetricGate, StagingFirstGate, evaluate
from promoter.errors import ConfigError, PolicyDenied
from promoter.settings import Settings, load_settings
from tests.core.test_pipeline import INTENT_TAGS, MODEL, SETTINGS, World
from tests.core.test_policy import deployment

DAY = 86400.0


def facts(**overrides: Any) -> GateFacts:
    values: dict[str, Any] = {"model": MODEL, "version": "3", "env": "production",
                              "namespace": "models-production"}
    values.update(overrides)
    return GateFacts(**values)


def settings_with(policy: dict[str, Any]) -> Settings:
    return SETTINGS.model_copy(update={"policy": SETTINGS.policy.model_validate(
        {"required_tags": {"validation_status": "passed"}, **policy})})


# ------------------------------------------------------------------ metric thresholds

@pytest.mark.parametrize(("check", "metrics", "passed", "detail"), [
    ("auc >= 0.9", {"auc": 0.93}, True, "auc = 0.93 (auc >= 0.9)"),
    ("auc >= 0.9", {"auc": 0.81}, False, "auc = 0.81 fails auc >= 0.9; promote a version whose "
                                         "run meets it"),
    ("latency_p99_ms <= 50", {"latency_p99_ms": 50.0}, True, "latency_p99_ms = 50"),
    ("latency_p99_ms <= 50", {"latency_p99_ms": 61.5}, False, "latency_p99_ms = 61.5 fails"),
    ("auc >= 0.9", {}, False, "logged no metric 'auc'; log it (required: auc >= 0.9)"),
    ("auc >= 0.9", {"auc": float("nan")}, False, "auc is NaN"),
    ("auc >= 0.9", {"auc": float("inf")}, False, "auc is inf, not a finite number"),
    ("auc <= 0.9", {"auc": float("inf")}, False, "auc is inf, not a finite number"),
    ("latency_p99_ms <= 50", {"latency_p99_ms": float("-inf")}, False,
     "latency_p99_ms is -inf, not a finite number (required: latency_p99_ms <= 50)"),
])
def test_metric_thresholds(check: str, metrics: dict[str, float], passed: bool,
                           detail: str) -> None:
    [result] = evaluate((MetricGate.parse(check),), deployment(), facts(metrics=metrics))
    assert result.rule == "metric:" + check.split()[0]
    assert result.passed is passed and detail in result.detail


def test_a_gate_scoped_to_production_does_not_apply_to_staging() -> None:
    gate = MetricGate.parse("auc >= 0.99", ("production",))
    assert evaluate((gate,), deployment(), facts(env="staging")) == []


# ------------------------------------------------------------------ staging first, with a clock

@pytest.mark.parametrize(("since", "passed", "detail"), [
    (None, False, "was never live in staging; promote it to staging first"),
    (1000.0, False, "for 12.0 h; it needs 1.0 d (another 12.0 h)"),
    (1000.0 - DAY, True, "live in staging for 1.5 d"),
])
def test_staging_first_with_soak_time(since: float | None, passed: bool, detail: str) -> None:
    now = 1000.0 + DAY / 2
    gate = StagingFirstGate("staging", DAY, ("production",))
    [result] = evaluate((gate,), deployment(),
                        facts(now=now, live_since=lambda env: since if env == "staging" else None))
    assert (result.rule, result.passed) == ("staging-first", passed)
    assert detail in result.detail


class History:
    def __init__(self) -> None:
        self.merged: dict[tuple[str, str, str], float] = {}

    def live_since(self, model: str, version: str, env: str) -> float | None:
        return self.merged.get((model, version, env))

    def doubt(self) -> str | None:
        return None


class Clock:
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


def test_the_pipeline_denies_production_until_the_soak_is_over(world: World) -> None:
    world.settings = settings_with({"gates": [
        {"rule": "staging_first", "after": "staging", "soak_seconds": DAY}]})
    history, clock = History(), Clock(5 * DAY)
    world.ports_extra = {"history": history, "clock": clock}
    with pytest.raises(PolicyDenied, match="staging-first: version 2 was never live in staging"):
        world.promote("2")
    assert world.registry.tags(MODEL, "2")["promoter.production.status"] == "denied"
    assert world.provider.proposals == [] and world.images.calls == []
    history.merged[(MODEL, "2", "staging")] = 4.5 * DAY
    with pytest.raises(PolicyDenied, match=r"another 12\.0 h"):
        world.promote("2")
    clock.value = 5.6 * DAY
    assert world.promote("2").outcome == "created"
    assert world.promote("2", env="staging").outcome == "created"  # the gate is production's


# ------------------------------------------------------------------ who may deploy where

def test_team_permissions(world: World) -> None:
    world.settings = settings_with({"teams": {
        "risk": {"environments": ["staging"]},
        "search": {"environments": ["staging", "production"],
                   "namespaces": ["models-staging"]}}})
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.owner.team": "risk"})
    with pytest.raises(PolicyDenied, match="team 'risk' may not deploy to production"):
        world.promote("4")
    world.registry.add(MODEL, "5", {**INTENT_TAGS, "deploy.owner.team": "search"})
    with pytest.raises(PolicyDenied, match="may not deploy into namespace models-production"):
        world.promote("5")
    world.registry.add(MODEL, "6", {**INTENT_TAGS, "deploy.owner.team": "ghost"})
    with pytest.raises(PolicyDenied, match="team 'ghost' may not deploy with promoter"):
        world.promote("6", env="staging")
    world.registry.add(MODEL, "7", {**INTENT_TAGS, "deploy.owner.team": "search"})
    assert world.promote("7", env="staging").outcome == "created"


def test_a_model_can_only_declare_the_team_that_owns_it(world: World) -> None:
    """The team is what the model version says about itself (deploy.owner.team): bound to
    registered-model names, claiming a team with more rights is denied."""
    world.settings = settings_with({"teams": {
        "risk": {"environments": ["staging", "production"], "models": ["Fraud *"]},
        "growth": {"environments": ["staging"], "models": ["growth-*", "Ranker"]}}})
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.owner.team": "growth"})
    with pytest.raises(PolicyDenied, match=r"model 'Fraud Detector' is not one of team "
                                           r"'growth''s models \(policy.teams.growth.models\)"):
        world.promote("4", env="staging")
    world.registry.add(MODEL, "5", {**INTENT_TAGS, "deploy.owner.team": "risk"})
    assert world.promote("5").outcome == "created"


def test_binding_some_teams_but_not_others_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "promoter.yaml"
    config.write_text('{"policy": {"teams": {"risk": {"models": ["fraud-*"]}, "growth": {}}}}')
    with pytest.raises(ConfigError, match="growth set\\(s\\) no models while other teams do"):
        load_settings(config, environ={})


# ------------------------------------------------------------------ CEL rules

def test_cel_rules_allow_and_deny_with_their_message(world: World) -> None:
    world.settings = settings_with({"gates": [{
        "rule": "cel", "name": "small-in-staging",
        "expression": "env != 'staging' || intent.spec.resources.gpu.count <= 1",
        "message": "staging gets at most one GPU"}, {
        "rule": "cel", "name": "auc-tag", "environments": ["production"],
        "expression": "metrics.auc >= 0.9 && tags['validation_status'] == 'passed'"}]})
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.resources.gpu.count": "2",
                                    "deploy.resources.gpu.type": "nvidia-a100"})
    with pytest.raises(PolicyDenied) as denied:
        world.promote("4", env="staging")
    assert denied.value.reasons == ["cel:small-in-staging: staging gets at most one GPU"]
    assert world.registry.tags(MODEL, "4")["promoter.staging.reason"] == \
        "cel:small-in-staging: staging gets at most one GPU"
    assert world.promote("4").outcome == "created"          # production: 2 GPUs, auc 0.91


def test_a_cel_rule_that_cannot_evaluate_denies_with_the_reason(world: World) -> None:
    world.settings = settings_with({"gates": [{
        "rule": "cel", "name": "reviewed", "expression": "tags['reviewed_by'] != ''"}]})
    with pytest.raises(PolicyDenied) as denied:
        world.promote("2")
    assert denied.value.reasons == [
        "cel:reviewed: requires tags['reviewed_by'] != '' (could not evaluate: "
        "a key or field it reads is missing)"]


@pytest.mark.parametrize("expression", [
    "int(tags.db_pin) > 0",                      # celpy: invalid literal for int(): '<value>'
    "tags.db_pin > 3",                           # no such overload: ... StringType('<value>')
    "tags[tags.db_pin] == 'x'",                  # no such key: '<value>'
    "tags.db_pin.owner == 'x'",                  # StringType('<value>') does not support ...
    "duration(tags.db_pin) > duration('1s')",    # Invalid duration StringType('<value>')
])
def test_a_cel_rule_that_cannot_evaluate_says_so_without_the_values(
        world: World, expression: str) -> None:
    """celpy's error text quotes the values it was handling: a tag holding a password reached
    the denial, and with it the MR, MLflow's reason tag, the audit trail and the logs."""
    secret = "hunter2-Sup3rSecret"
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "db_pin": secret})
    world.settings = settings_with({"gates": [{
        "rule": "cel", "name": "pin", "expression": expression, "message": "needs a pin"}]})
    with pytest.raises(PolicyDenied) as denied:
        world.promote("4")
    [reason] = denied.value.reasons
    assert reason.startswith(f"cel:pin: needs a pin (could not evaluate {expression}: ")
    assert secret not in reason and secret not in str(denied.value)
    assert secret not in world.registry.tags(MODEL, "4")["promoter.production.reason"]


def test_a_regex_built_from_a_tag_is_not_printed_to_stderr(
        capfd: pytest.CaptureFixture[str]) -> None:
    """RE2 prints a pattern it cannot parse straight to file descriptor 2, past promoter's
    log masking: a pattern made of a tag's value must fail as a reason, never be printed."""
    secret = "hunter2-Sup3rSecret"
    rule = CelRule.compile("pin", "tags.db_pin.matches(tags.db_pin + '[')", "needs a pin", None)
    passed, reason = rule.evaluate({"tags": {"db_pin": secret}})
    assert not passed and reason.startswith("needs a pin (could not evaluate ")
    assert secret not in reason and secret not in capfd.readouterr().err
    # matches() still matches.
    rule = CelRule.compile("prefix", "tags.db_pin.matches('^hunter[0-9]')", "", None)
    assert rule.evaluate({"tags": {"db_pin": secret}})[0]


def test_a_macro_variable_shadows_a_variable_only_inside_its_macro() -> None:
    """``tags.all(metrics, ...)`` binds its own ``metrics``: the rule reads nothing of the run,
    so a run that may not vouch for the version does not deny it."""
    rule = CelRule.compile("tagged", "tags.all(metrics, metrics != '')", "", None)
    assert not rule.reads_run
    [result] = evaluate((CelGate(rule),), deployment(),
                        facts(tags={"a": "1"}, run_doubt="the version's files are elsewhere"))
    assert result.passed, result.detail
    # The macro's own ``intent`` is a list element, not the intent whose fields are checked.
    CelRule.compile("own", "[intent].all(intent, intent.foo == 1)", "", {"spec": {}})


# ------------------------------------------------------------------ bad gates stop promoter

@pytest.mark.parametrize(("gate", "said"), [
    ({"rule": "metric", "check": "auc >> 0.9"}, "is not 'NAME OP NUMBER'"),
    ({"rule": "speed"}, "rule"),
    ({"rule": "cel", "name": "x", "expression": "intent.spec.owner.team =="},
     "CEL syntax error"),
    ({"rule": "cel", "name": "x", "expression": "intent.spec.resources.gpux.count < 2"},
     "intent has no field 'intent.spec.resources.gpux'"),
    ({"rule": "cel", "name": "x", "expression": "owner == 'risk'"},
     "unknown variable 'owner'"),
    # A macro's variable is bound inside that macro only, and a method call binds none.
    ({"rule": "cel", "name": "x", "expression": "[1].all(x, x > 0) && x == 1"},
     "unknown variable 'x'"),
    ({"rule": "cel", "name": "x", "expression": "tags.exists(k, k == 'a') && tags[k] == 'b'"},
     "unknown variable 'k'"),
    ({"rule": "cel", "name": "x", "expression": "model.startsWith(prefix)"},
     "unknown variable 'prefix'"),
    ({"rule": "metric", "check": "auc >= 0.9", "environments": ["moon"]},
     "unknown environment(s) moon"),
    ({"rule": "staging_first", "after": "qa"}, "unknown environment(s) qa"),
])
def test_bad_gates_are_config_errors_at_load(tmp_path: Path, gate: dict[str, Any],
                                             said: str) -> None:
    import json
    config = tmp_path / "promoter.yaml"
    config.write_text(json.dumps({"policy": {"gates": [gate]}}))
    with pytest.raises(ConfigError) as failed:
        load_settings(config, environ={})
    assert said in str(failed.value) and str(config) in failed.value.message


@pytest.mark.parametrize(("team", "section"), [
    ({"approvers": {"prodution": {"user_ids": [7]}}}, "approvers"),
    ({"environments": ["staging", "prodution"]}, "environments"),
])
def test_a_team_naming_an_unknown_environment_is_a_config_error_at_load(
        tmp_path: Path, team: dict[str, Any], section: str) -> None:
    """A typo'd environment under a team was accepted, and its approval rule or restriction
    then silently never applied."""
    import json
    config = tmp_path / "promoter.yaml"
    config.write_text(json.dumps({"policy": {"teams": {"risk": team}}}))
    with pytest.raises(ConfigError) as failed:
        load_settings(config, environ={})
    assert f"policy.teams.risk.{section} names unknown environment(s) prodution" in \
        failed.value.message
    assert failed.value.hint == "configured: production, staging"


def test_team_approvers_per_environment_reach_the_proposal(world: World) -> None:
    world.settings = settings_with({"teams": {"risk": {
        "approvers": {"production": {"user_ids": [7], "group_ids": [12, 3]}}}}})
    world.promote("2")
    world.promote("2", env="staging")
    production, staging = world.provider.proposals
    assert (production.approver_user_ids, production.approver_group_ids) == ((7,), (12, 3))
    assert (staging.approver_user_ids, staging.approver_group_ids) == ((), ())
