"""Intents a careless or hostile model owner can write, through the whole pipeline: each ends
as a named ``invalid`` (or a policy denial) in MLflow, opens nothing, and never lets one model
change what another runs."""

from __future__ import annotations

from typing import Any

import pytest

from promoter.core.intent import build_request
from promoter.core.spec import API_VERSION, KIND
from promoter.errors import PermanentError, PolicyDenied, UserError
from promoter.ports.registry import ModelVersionInfo
from tests.core.test_pipeline import (
    INTENT_TAGS,
    MODEL,
    NAME,
    SETTINGS,
    MemoryLedger,
    MemoryRegistry,
    World,
)

INTENT: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "spec": {
    "model": {"name": MODEL, "version": "1"}, "owner": {"team": "risk", "costCenter": "cc-1"}}}


# ------------------------------------------------------------ one name, one registered model

def test_another_model_deriving_the_name_in_another_environment_is_refused(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)               # production runs "Fraud Detector"
    world.registry.add("fraud_detector", "1")
    with pytest.raises(PermanentError, match="both become deployment 'fraud-detector'"):
        world.promote("1", env="staging", model="fraud_detector")
    assert world.registry.tags("fraud_detector", "1")["promoter.staging.status"] == "invalid"
    assert [p.env for p in world.provider.proposals] == ["production"]   # no staging MR
    assert "promote/fraud-detector/staging" not in world.provider.branches


def test_the_target_branch_base_names_the_owner_when_the_ledger_is_new(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)
    world.ledger = MemoryLedger()                                 # a fresh state directory
    world.registry.add("fraud_detector", "1")
    with pytest.raises(PermanentError, match="'Fraud Detector' and 'fraud_detector'"):
        world.promote("1", env="staging", model="fraud_detector")
    assert len(world.provider.proposals) == 1


def test_a_deploy_name_tag_cannot_take_over_another_models_directory(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)
    world.registry.add("Other Model", "1", {**INTENT_TAGS, "deploy.name": NAME})
    with pytest.raises(PermanentError, match=f"both become deployment '{NAME}'"):
        world.promote("1", env="staging", model="Other Model")


@pytest.mark.parametrize(("tag", "value"), [("deploy.name", NAME + "\n"),
                                            ("deploy.owner.team", "risk\n")])
def test_a_trailing_newline_is_an_invalid_intent_before_anything_is_built(
        world: World, tag: str, value: str) -> None:
    """``$`` also matches before a final newline: with it, "fraud-detector\\n" passed the name
    check, compared unequal to the owner's name in the collision guard, and its image was
    pushed (the reference trimmed) into fraud-detector's repository and signed."""
    world.provider.merge(world.promote("2").mr_iid)
    built = len(world.images.calls)
    world.registry.add("Other Model", "1", {**INTENT_TAGS, tag: value})
    with pytest.raises(PermanentError, match="must be"):
        world.promote("1", env="staging", model="Other Model")
    assert len(world.images.calls) == built
    assert world.registry.tags("Other Model", "1")["promoter.staging.status"] == "invalid"


def test_the_owner_itself_promotes_to_another_environment(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)
    assert world.promote("2", env="staging").outcome == "created"


# ------------------------------------------------------------ shapes are named, not crashes

@pytest.mark.parametrize(("change", "named"), [
    ({"spec": [1]}, "spec: must be a mapping, not list"),
    ({"metadata": [1]}, "metadata: must be a mapping, not list"),
    ({"spec": {**INTENT["spec"], "environments": [1, 2]}}, "spec.environments: must be a mapping"),
    ({"spec": {**INTENT["spec"], "environments": {"staging": [1]}}},
     "spec.environments.staging: must be a mapping"),
    # Non-text keys (YAML `1:`, `null:`, `true:`, `? [a, b]`) crashed sorting the unknown ones.
    ({"spec": {**INTENT["spec"], "environments": {1: {}}}},
     "spec.environments: 1 is not an environment name"),
    ({"spec": {**INTENT["spec"], "environments": {None: {}, "staging": {}}}},
     "spec.environments: None is not an environment name"),
    ({"spec": {**INTENT["spec"], "environments": {True: {}, "moon": {}}}},
     "spec.environments: True is not an environment name"),
    ({"spec": {**INTENT["spec"], "environments": {("a", "b"): {}}}},
     "spec.environments: ('a', 'b') is not an environment name"),
    # No metadata.name and a spec.model with no name to derive one from: an AttributeError.
    ({"spec": {**INTENT["spec"], "model": "fraud"}},
     "spec.model: Input should be a valid dictionary"),
    ({"spec": {**INTENT["spec"], "model": ["fraud"]}}, "metadata.name: is required"),
])
def test_wrong_shapes_are_user_errors_naming_the_field(change: dict[str, Any],
                                                       named: str) -> None:
    with pytest.raises(UserError, match="not a valid ModelDeployment") as failed:
        build_request(SETTINGS.targets(), {**INTENT, **change}, "staging", origin="intent")
    assert named in failed.value.message


def _logging_intent(world: World, intent: dict[Any, Any]) -> MemoryRegistry:
    """The world's registry replaced by one whose version 1 of MODEL logged ``intent`` (a
    modeldeployment.yaml as read)."""
    class LoggedIntentRegistry(MemoryRegistry):
        def intent(self, version: ModelVersionInfo) -> dict[str, Any]:
            return intent

    registry = LoggedIntentRegistry()
    registry.add(MODEL, "1")
    world.registry = registry
    return registry


def test_a_logged_intent_of_the_wrong_shape_ends_invalid_in_mlflow(world: World) -> None:
    registry = _logging_intent(world, {"spec": [1]})
    with pytest.raises(PermanentError, match="spec: must be a mapping"):
        world.promote("1")
    assert registry.tags(MODEL, "1")["promoter.production.status"] == "invalid"
    assert world.provider.proposals == []


def test_a_logged_intent_with_a_number_for_an_environment_ends_invalid_in_mlflow(
        world: World) -> None:
    """`environments: {1: {}}` in a logged modeldeployment.yaml raised TypeError while
    naming the unknown environments: the job failed as unexpected and was retried."""
    registry = _logging_intent(world, {"spec": {"environments": {1: {}, "staging": {}}}})
    with pytest.raises(PermanentError, match="1 is not an environment name"):
        world.promote("1")
    assert registry.tags(MODEL, "1")["promoter.production.status"] == "invalid"
    assert world.provider.proposals == []


def test_a_huge_list_of_problems_is_bounded() -> None:
    spec = {**INTENT["spec"], **{f"unknown{i}": i for i in range(5000)}}
    with pytest.raises(UserError) as failed:
        build_request(SETTINGS.targets(), {**INTENT, "spec": spec}, "staging", origin="intent")
    lines = failed.value.message.splitlines()
    assert len(lines) <= 22 and "more problem(s)" in lines[-1]


# ------------------------------------------------------------ ownership and quotas

def test_ownership_cannot_be_overridden_per_environment(world: World) -> None:
    world.registry.add(MODEL, "4", {**INTENT_TAGS,
                                    "deploy.environments.production.owner.team": "nobody"})
    with pytest.raises(PermanentError, match="owner: is shared by every environment"):
        world.promote("4")
    assert world.provider.proposals == [] and world.images.calls == []



def test_a_description_per_environment_is_refused_not_dropped(world: World) -> None:
    """The description is rendered only into the base every environment shares: a
    per-environment one was accepted and silently never rendered."""
    intent = {**INTENT, "spec": {**INTENT["spec"], "description": "shared", "environments": {
        "production": {"description": "production only"}}}}
    with pytest.raises(UserError) as failed:
        build_request(SETTINGS.targets(), intent, "production", origin="intent")
    assert ("spec.environments.production.description: is shared by every environment"
            in failed.value.message)
    world.registry.add(MODEL, "4", {**INTENT_TAGS,
                                    "deploy.environments.staging.description": "staging only"})
    with pytest.raises(PermanentError, match="description: is shared by every environment"):
        world.promote("4")
    assert world.provider.proposals == []

def test_a_team_without_a_quota_gets_the_default_quota(world: World) -> None:
    world.settings = SETTINGS.model_copy(update={"policy": SETTINGS.policy.model_copy(update={
        "team_gpu_quota": {"risk": 100}, "default_team_gpu_quota": 4})})
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.owner.team": "unlisted",
                                    "deploy.resources.gpu.count": "8",
                                    "deploy.resources.gpu.type": "nvidia-a100",
                                    "deploy.scaling.maxReplicas": "10"})
    with pytest.raises(PolicyDenied,
                       match=r"unlisted claims 80 GPUs in production .* over its quota of 4"):
        world.promote("4")


# ------------------------------------------------------------ decommission names what is live

def test_decommission_names_the_version_live_on_the_target_branch(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)               # main runs version 2
    world.promote("1")                                            # an MR for 1, never merged
    world.registry.set_alias(MODEL, "production", None)
    result = world.run(action="decommission")
    description = world.provider.get(result.mr_iid).description
    assert "main runs version 2" in description and "version 1" not in description
    assert result.version == "2"
    assert world.registry.writes[-1][:3] == (MODEL, "2", "production")


# ------------------------------------------------------------ a team's quota is a total

def test_the_team_quota_sums_what_the_target_branch_runs(world: World) -> None:
    """Three models of one team: two merged to production claim 8 GPUs; a third asking for 6
    more breaks the team's 12, though each alone fits."""
    world.settings = SETTINGS.model_copy(update={"policy": SETTINGS.policy.model_copy(update={
        "team_gpu_quota": {"risk": 12}})})
    gpus = {"deploy.resources.gpu.count": "2", "deploy.resources.gpu.type": "nvidia-a100",
            "deploy.scaling.maxReplicas": "2"}
    for model, name in (("Model A", "model-a"), ("Model B", "model-b")):
        world.registry.add(model, "1", {**INTENT_TAGS, **gpus})
        world.provider.merge(world.promote("1", model=model).mr_iid)
        assert f"deploy/{name}/overlays/production/kustomization.yaml" in \
            world.provider.branches["main"]
    world.registry.add("Model C", "1", {**INTENT_TAGS, **gpus,
                                        "deploy.scaling.maxReplicas": "3"})
    with pytest.raises(PolicyDenied, match=r"risk claims 14 GPUs .* model-c \(6\), its other "
                                           r"deployments here \(8\)\), over its quota of 12"):
        world.promote("1", model="Model C")
    world.registry.add("Model C", "2", {**INTENT_TAGS, **gpus})     # 4 more: exactly 12
    assert world.promote("2", model="Model C").outcome == "created"
    # Promoting Model A again counts its own overlay once, not twice.
    world.registry.add("Model A", "2", {**INTENT_TAGS, **gpus})
    assert world.promote("2", model="Model A").outcome == "created"
