"""A promotion reaches beyond its environment's overlay only through the shared base
(core/shared_base.py): a runtime switch under another environment is refused, and a base change
is reviewed as a change of every environment whose overlay builds on it."""

from __future__ import annotations

import pytest

from promoter.core import shared_base
from promoter.errors import PermanentError
from tests.core.test_codeowners import settings_with
from tests.core.test_pipeline import INTENT_TAGS, MODEL, NAME, World

APPROVERS = {"teams": {"risk": {"approvers": {"staging": {"user_ids": [5]},
                                              "production": {"group_ids": [42]}}}}}


def _live_in_production(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid or 0)


def test_a_runtime_switch_under_a_running_environment_is_refused(world: World) -> None:
    _live_in_production(world)   # production runs the default runtime, kserve
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.runtime": "vllm"})
    with pytest.raises(PermanentError, match="runs runtime 'kserve' in production"):
        world.promote("4", env="staging")
    reason = world.registry.tags(MODEL, "4")["promoter.staging.reason"]
    assert world.registry.tags(MODEL, "4")["promoter.staging.status"] == "invalid"
    assert "'vllm'" in reason and "deploy.name" in reason and "decommission" in reason
    assert len(world.provider.proposals) == 1   # production's: nothing proposed for staging


def test_a_runtime_switch_of_the_only_environment_and_a_re_promotion_pass(
        world: World) -> None:
    _live_in_production(world)
    assert world.promote("2", env="staging").outcome == "created"   # same version, same runtime
    other = "Other Model"   # lives in staging only: its runtime may change there
    world.registry.add(other, "1")
    world.registry.add(other, "2", {**INTENT_TAGS, "deploy.runtime": "vllm",
                                    "deploy.resources.gpu.count": "1",
                                    "deploy.resources.gpu.type": "nvidia-a100"})
    world.provider.merge(world.promote("1", env="staging", model=other).mr_iid or 0)
    assert world.promote("2", env="staging", model=other).outcome == "created"
    base = world.provider.proposals[-1].files["deploy/other-model/base/inferenceservice.yaml"]
    assert "promoter.dev/runtime: vllm" in str(base)


def test_a_base_change_is_reviewed_as_a_change_of_production(world: World) -> None:
    world.settings = settings_with(APPROVERS)
    _live_in_production(world)
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.owner.costCenter": "cc-9"})
    world.promote("4", env="staging")
    proposal = world.provider.proposals[-1]
    # staging alone: 1 approval, auto-merge, approver user 5; production: 2, by group 42
    assert (proposal.approvals_required, proposal.auto_merge) == (2, False)
    assert (proposal.approver_user_ids, proposal.approver_group_ids) == ((), (42,))
    assert proposal.labels == ("promoter", "env::staging", "team::risk", "shared-base",
                               "affects:production")
    section = proposal.description.split("### Other environments this changes", 1)[1]
    section = section.split("###", 1)[0]
    assert "**production**" in section and "strictest (2)" in section
    assert f"`deploy/{NAME}/base/inferenceservice.yaml`" in section
    assert f"`deploy/{NAME}/base/kustomization.yaml`" not in section   # unchanged
    assert "**Required approvals:** 2" in proposal.description


def test_a_plain_staging_promotion_keeps_staging_review(world: World) -> None:
    world.settings = settings_with(APPROVERS)
    _live_in_production(world)
    world.promote("3", env="staging")   # another version, the same shared intent
    proposal = world.provider.proposals[-1]
    assert (proposal.approvals_required, proposal.auto_merge) == (1, True)
    assert (proposal.approver_user_ids, proposal.approver_group_ids) == ((5,), ())
    assert proposal.labels == ("promoter", "env::staging", "team::risk")
    assert "Other environments" not in proposal.description


def test_affected_environments_are_the_others_building_on_a_changed_base() -> None:
    old = {"m/base/a.yaml": "a", "m/base/gone.yaml": "g"}
    new = {"m/base/a.yaml": "A", "m/base/new.yaml": "n"}
    change = shared_base.affected_environments(old, new, ("production", "staging"), "staging")
    assert change.environments == ("production",)
    assert change.paths == ("m/base/a.yaml", "m/base/gone.yaml", "m/base/new.yaml")
    assert not shared_base.affected_environments(old, old, ("production",), "staging")
    assert not shared_base.affected_environments({}, new, ("staging",), "staging")
