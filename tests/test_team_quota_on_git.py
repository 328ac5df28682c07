"""The team GPU quota sums what a real target branch runs (the local git provider, real git)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoter.adapters import localgit
from promoter.errors import PolicyDenied
from promoter.policy_check import Subject, check_policy
from tests.commands.test_render import VALID, write_intent
from tests.core.test_pipeline import (
    INTENT_TAGS,
    SETTINGS,
    CountingImages,
    CountingSigner,
    MemoryLedger,
    MemoryRegistry,
    World,
)

GPUS = {"deploy.resources.gpu.count": "2", "deploy.resources.gpu.type": "nvidia-a100",
        "deploy.scaling.maxReplicas": "2"}


def test_three_models_of_one_team_against_a_real_target_branch(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={
        "state_dir": tmp_path / "state",
        "policy": SETTINGS.policy.model_copy(update={"team_gpu_quota": {"risk": 10}})})
    provider = localgit.from_settings(settings)
    registry = MemoryRegistry()
    world = World(registry, provider, MemoryLedger(), CountingImages(),  # type: ignore[arg-type]
                  CountingSigner(), [], settings)
    for model in ("Model A", "Model B"):
        registry.add(model, "1", {**INTENT_TAGS, **GPUS})
        mr = world.promote("1", model=model).mr_iid
        assert mr is not None
        for user in ("alice", "bob"):
            provider.approve(mr, user)
        provider.merge(mr, "alice")
    registry.add("Model C", "1", {**INTENT_TAGS, **GPUS})
    with pytest.raises(PolicyDenied, match="plus 8 its other deployments claim here exceeds "
                                           "risk's quota of 10"):
        world.promote("1", model="Model C")
    assert [mr.source_branch for mr in provider.list_mrs()] == []   # nothing was proposed

    # `promoter policy check` counts the same target branch: the same denial, locally.
    intent = {**VALID, "spec": {**VALID["spec"], "model": {"name": "Model C", "version": "1"},  # type: ignore[dict-item]
                                "resources": {"gpu": {"count": 2, "type": "nvidia-a100"}},
                                "scaling": {"maxReplicas": 2}}}
    decision = check_policy(settings, Subject(env="production", intent_file=write_intent(
        tmp_path / "model-c.yaml", intent)))
    assert not decision.allowed
    assert any("plus 8 its other deployments claim here exceeds risk's quota of 10" in reason
               for reason in decision.reasons), decision.reasons
