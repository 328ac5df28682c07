"""A staging promotion that changes the shared base, through GitLab (python-gitlab → the
stand-in over real HTTP, a real git repo): production's merged overlay is read from the target
branch, and the MR is reviewed as a change of production too."""

from __future__ import annotations

from pathlib import Path

from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from tests.core.test_codeowners import TEAMS, settings_with
from tests.core.test_pipeline import (
    INTENT_TAGS,
    MODEL,
    NAME,
    RENDERER,
    CountingImages,
    CountingSigner,
    MemoryLedger,
    MemoryRegistry,
    MemorySteps,
)
from tests.gitlab.conftest import GitLabHarness, make_standin
from tests.gitlab.test_approvers import rule_of


def test_a_base_change_from_staging_needs_production_review(tmp_path: Path) -> None:
    standin = make_standin(tmp_path, profile="ee-17")
    try:
        harness = GitLabHarness(standin, tmp_path)
        registry, ledger = MemoryRegistry(), MemoryLedger()
        registry.add(MODEL, "1")
        registry.add(MODEL, "2", {**INTENT_TAGS, "deploy.owner.costCenter": "cc-9"})

        def promote(version: str, env: str) -> int:
            registry.set_alias(MODEL, env, version)
            ports = Ports(registry, harness.provider, ledger, RENDERER, CountingImages(),
                          CountingSigner())
            result = Pipeline(settings_with(TEAMS).pipeline_config(), ports).run(
                PromotionJob(MODEL, env, "promote", version), MemorySteps())
            assert result.mr_iid is not None
            return result.mr_iid

        first = promote("1", "production")
        for user in ("alice", "bob"):
            harness.approve(first, user)
        harness.merge(first, standin.repo.head(f"promote/{NAME}/production"))
        iid = promote("2", "staging")
        mr = harness.provider.get(iid)
        assert mr.approvals_required == 2   # production's, not staging's 1
        groups = rule_of(harness, iid)["groups"]
        assert [g["id"] for g in groups] == [42]  # type: ignore[attr-defined]
        assert "affects:production" in mr.labels and "env::staging" in mr.labels
        assert not mr.auto_merge            # staging would auto-merge; production does not
        assert "### Other environments this changes" in mr.description
        assert f"`deploy/{NAME}/base/inferenceservice.yaml`" in mr.description
        owners = standin.repo.git("show", f"promote/{NAME}/staging:CODEOWNERS")
        assert f"/deploy/{NAME}/base/ @risk/compliance @risk/leads @risk/ml\n" in owners
    finally:
        standin.stop()
