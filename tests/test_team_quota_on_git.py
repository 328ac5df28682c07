"""The team GPU quota sums what a real target branch runs and what open merge requests would
add (the local git provider, real git, the state database's ledger)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promoter.adapters import localgit
from promoter.errors import PolicyDenied
from promoter.policy_check import Subject, check_policy
from promoter.service.ledger import StateLedger
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

# The pyfunc image of the intents' `deployment` runtime needs a base (Python) to start: without
# one the pipeline, and `policy check` with it, refuse the intent before any quota is counted.
BASED_IMAGE = SETTINGS.image.model_copy(update={"base": "python:3.11-slim"})
GPUS = {"deploy.resources.gpu.count": "2", "deploy.resources.gpu.type": "nvidia-a100",
        "deploy.scaling.maxReplicas": "2"}


def test_three_models_of_one_team_against_a_real_target_branch(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={
        "state_dir": tmp_path / "state", "image": BASED_IMAGE,
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
    with pytest.raises(PolicyDenied, match=r"model-c \(4\), its other deployments here \(8\)\), "
                                           "over its quota of 10"):
        world.promote("1", model="Model C")
    assert [mr.source_branch for mr in provider.list_mrs()] == []   # nothing was proposed

    # `promoter policy check` counts the same target branch: the same denial, locally.
    intent = {**VALID, "spec": {**VALID["spec"], "model": {"name": "Model C", "version": "1"},  # type: ignore[dict-item]
                                "resources": {"gpu": {"count": 2, "type": "nvidia-a100"}},
                                "scaling": {"maxReplicas": 2}}}
    checked = check_policy(settings, Subject(env="production", intent_file=write_intent(
        tmp_path / "model-c.yaml", intent)))
    assert checked.not_checked == ()   # read from the remote, without the shared clone
    decision = checked.decision
    assert not decision.allowed
    assert any("(4), its other deployments here (8)), over its quota of 10" in reason
               for reason in decision.reasons), decision.reasons


def test_a_second_model_is_denied_while_the_first_ones_mr_is_still_open(tmp_path: Path) -> None:
    """Quota 6, each model claims 2 GPUs x 2 replicas: alone each fits, together 8 do not.
    Nothing is merged yet, so the target branch alone would let both through."""
    settings = SETTINGS.model_copy(update={
        "state_dir": tmp_path / "state", "image": BASED_IMAGE,
        "policy": SETTINGS.policy.model_copy(update={"team_gpu_quota": {"risk": 6}})})
    provider = localgit.from_settings(settings)
    registry = MemoryRegistry()
    world = World(registry, provider, StateLedger(tmp_path / "state"),  # type: ignore[arg-type]
                  CountingImages(), CountingSigner(), [], settings)
    for model in ("Model A", "Model B"):
        registry.add(model, "1", {**INTENT_TAGS, **GPUS})
    assert world.promote("1", model="Model A").mr_iid is not None
    with pytest.raises(PolicyDenied, match=r"model-b \(4\), its other deployments here \(4\)\), "
                                           "over its quota of 6"):
        world.promote("1", model="Model B")
    assert [mr.source_branch for mr in provider.list_mrs()] == ["promote/model-a/production"]
    # `promoter policy check` reads the same ledger: the same denial, locally.
    intent = {**VALID, "spec": {**VALID["spec"], "model": {"name": "Model B", "version": "1"},  # type: ignore[dict-item]
                                "resources": {"gpu": {"count": 2, "type": "nvidia-a100"}},
                                "scaling": {"maxReplicas": 2}}}
    checked = check_policy(settings, Subject(env="production", intent_file=write_intent(
        tmp_path / "model-b.yaml", intent)))
    assert checked.not_checked == ()   # read from the remote, without the shared clone
    decision = checked.decision
    assert any("(4), its other deployments here (4)), over its quota of 6" in reason
               for reason in decision.reasons), decision.reasons

    # Model A's MR closed unmerged: its GPUs are no longer claimed, and Model B fits.
    provider.close(provider.list_mrs()[0].iid, "alice")
    world.ledger.set_status("model-a", "production", "closed")
    assert world.promote("1", model="Model B").mr_iid is not None
