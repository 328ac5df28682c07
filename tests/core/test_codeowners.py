"""Each promotion writes its model directory's CODEOWNERS lines (core/codeowners.py), in the
same commit as the manifests, read from the target branch through the provider port."""

from __future__ import annotations

from typing import Any

import pytest

from promoter.core import codeowners
from promoter.core.gitops_scaffold import BEGIN as SCAFFOLD_BEGIN
from promoter.core.gitops_scaffold import END as SCAFFOLD_END
from promoter.errors import ConfigError
from promoter.settings import Settings
from tests.core.test_pipeline import INTENT_TAGS, MODEL, NAME, SETTINGS, World

TEAMS: dict[str, Any] = {"teams": {
    "risk": {"approvers": {"staging": {"codeowners": ["@risk/ml"]},
                           "production": {"codeowners": ["@risk/leads", "@risk/compliance"],
                                          "group_ids": [42]}}},
    "search": {}}}


def settings_with(policy: dict[str, Any]) -> Settings:
    return SETTINGS.model_copy(update={"policy": SETTINGS.policy.model_validate(
        {"required_tags": {"validation_status": "passed"}, **policy})})


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_promotion_commits_the_model_directory_owners_with_the_manifests(world: World) -> None:
    world.settings = settings_with(TEAMS)
    world.promote("2")
    (proposal,) = world.provider.proposals
    branch = world.provider.branches[proposal.branch]
    assert f"deploy/{NAME}/overlays/production/kustomization.yaml" in proposal.files
    assert _lines(branch["CODEOWNERS"]) == [
        f"/deploy/{NAME}/ @risk/compliance @risk/leads @risk/ml",
        f"/deploy/{NAME}/base/ @risk/compliance @risk/leads",
        f"/deploy/{NAME}/overlays/production/ @risk/compliance @risk/leads"]


def test_the_base_line_names_the_owners_of_every_environment_building_on_it(
        world: World) -> None:
    """A base change changes what every environment with an overlay runs: GitLab's code-owner
    approval of the base must come from their owners, not only the promoted environment's."""
    world.settings = settings_with(TEAMS)
    world.provider.merge(world.promote("2").mr_iid or 0)
    world.promote("2", env="staging")
    text = world.provider.branches[f"promote/{NAME}/staging"]["CODEOWNERS"]
    assert f"/deploy/{NAME}/base/ @risk/compliance @risk/leads @risk/ml" in _lines(text)
    assert f"/deploy/{NAME}/overlays/staging/ @risk/ml" in _lines(text)


def test_re_promotion_and_other_models_keep_one_line_per_path(world: World) -> None:
    world.settings = settings_with(TEAMS)
    hand = "# ours\n* @platform\n/docs/ @writers\n"
    world.provider.branches["main"]["CODEOWNERS"] = hand
    world.provider.merge(world.promote("2").mr_iid or 0)
    world.provider.merge(world.promote("2", env="staging").mr_iid or 0)
    first = world.provider.branches["main"]["CODEOWNERS"]
    assert world.promote("3").outcome == "created"  # a new version: the owners are the same
    assert world.provider.branches[f"promote/{NAME}/production"]["CODEOWNERS"] == first
    world.registry.add("Fraud", "1")   # "fraud" is a prefix of "fraud-detector"
    world.provider.merge(world.promote("1", model="Fraud", env="staging").mr_iid or 0)
    text = world.provider.branches["main"]["CODEOWNERS"]
    assert text.startswith(hand)   # the block goes last: after "*", so its lines win
    assert _lines(text) == [
        "* @platform", "/docs/ @writers",
        "/deploy/fraud-detector/ @risk/compliance @risk/leads @risk/ml",
        "/deploy/fraud-detector/base/ @risk/compliance @risk/leads @risk/ml",
        "/deploy/fraud-detector/overlays/production/ @risk/compliance @risk/leads",
        "/deploy/fraud-detector/overlays/staging/ @risk/ml",
        "/deploy/fraud/ @risk/compliance @risk/leads @risk/ml",
        "/deploy/fraud/base/ @risk/ml",
        "/deploy/fraud/overlays/staging/ @risk/ml"]
    assert text.count(codeowners.BEGIN) == 1


def test_the_block_follows_gitops_init_so_its_lines_win(world: World) -> None:
    world.settings = settings_with(TEAMS)
    scaffold = (f"# {SCAFFOLD_BEGIN}\n/deploy/*/overlays/production/ @everyone\n"
                f"# {SCAFFOLD_END}\n[Docs]\n/docs/ @writers\n")
    world.provider.branches["main"]["CODEOWNERS"] = scaffold
    world.promote("2")
    text = world.provider.branches[f"promote/{NAME}/production"]["CODEOWNERS"]
    # after the generic line (GitLab: the last match wins), before the user's own section
    assert _lines(text) == ["/deploy/*/overlays/production/ @everyone",
                            f"/deploy/{NAME}/ @risk/compliance @risk/leads @risk/ml",
                            f"/deploy/{NAME}/base/ @risk/compliance @risk/leads",
                            f"/deploy/{NAME}/overlays/production/ @risk/compliance @risk/leads",
                            "[Docs]", "/docs/ @writers"]


def test_a_team_without_owners_writes_no_file(world: World) -> None:
    world.settings = settings_with(TEAMS)
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.owner.team": "search"})
    world.promote("4")
    assert "CODEOWNERS" not in world.provider.branches[f"promote/{NAME}/production"]


def test_owners_that_change_replace_the_lines() -> None:
    entries = codeowners.model_entries("deploy", NAME, "production",
                                       {"production": ("@a",), "staging": ("@b",)})
    once = codeowners.upsert(None, entries)
    assert once is not None
    again = codeowners.upsert(once, codeowners.model_entries(
        "deploy", NAME, "production", {"production": ("@c",)}))
    assert again is not None
    assert _lines(again) == [f"/deploy/{NAME}/ @c", f"/deploy/{NAME}/base/ @c",
                             f"/deploy/{NAME}/overlays/production/ @c"]
    assert codeowners.upsert(again, codeowners.model_entries(
        "deploy", NAME, "production", {"production": ("@c",)})) == again


@pytest.mark.parametrize("name", ["x\n* @evil", "x y", "../etc", "X", "a#b", ""])
def test_hostile_model_names_cannot_become_lines(name: str) -> None:
    with pytest.raises(ConfigError):
        codeowners.model_entries("deploy", name, "production", {"production": ("@a",)})


@pytest.mark.parametrize("owner", ["@ok\n* @evil", "@a b", "@a#b", "everyone", "", "@"])
def test_hostile_owners_are_refused_in_settings_and_in_the_core(owner: str) -> None:
    with pytest.raises(ConfigError):
        codeowners.model_entries("deploy", NAME, "production", {"production": (owner,)})
    with pytest.raises(ConfigError):
        codeowners.upsert(None, {f"/deploy/{NAME}/": (owner,)})
    with pytest.raises(ValueError, match="CODEOWNERS owner"):
        settings_with({"teams": {"risk": {"approvers": {
            "production": {"codeowners": [owner]}}}}})


def test_a_broken_block_is_left_alone(world: World) -> None:
    world.settings = settings_with(TEAMS)
    broken = f"{codeowners.BEGIN}\n/deploy/x/ @x\n"   # no end marker
    world.provider.branches["main"]["CODEOWNERS"] = broken
    world.promote("2")
    assert world.provider.branches[f"promote/{NAME}/production"]["CODEOWNERS"] == broken
    assert ("codeowners", "skipped") in world.progress
