"""A promotion through GitLab (python-gitlab → the stand-in over real HTTP, a real git repo)
commits the model directory's CODEOWNERS lines and the audit head anchor in the same commit as
its manifests."""

from __future__ import annotations

from pathlib import Path

from promoter.core.audit_anchor import anchor_path
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from tests.core.test_audit_anchor import Heads
from tests.core.test_codeowners import TEAMS, settings_with
from tests.core.test_pipeline import (
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


def _promote(harness: GitLabHarness, registry: MemoryRegistry, version: str) -> int:
    registry.set_alias(MODEL, "production", version)
    ports = Ports(registry, harness.provider, MemoryLedger(), RENDERER, CountingImages(),
                  CountingSigner(), audit=Heads())
    result = Pipeline(settings_with(TEAMS).pipeline_config(), ports).run(
        PromotionJob(MODEL, "production", "promote", version), MemorySteps())
    assert result.mr_iid is not None
    return result.mr_iid


def test_the_mr_commit_holds_codeowners_next_to_the_manifests(tmp_path: Path) -> None:
    standin = make_standin(tmp_path)
    try:
        repo = standin.repo
        repo.commit_actions("main", repo.head("main"), [{
            "action": "create", "file_path": "CODEOWNERS",
            "content": "* @platform\n[Docs]\n/docs/ @writers\n"}], "owners\n")
        harness = GitLabHarness(standin, tmp_path)
        registry = MemoryRegistry()
        for version in ("1", "2"):
            registry.add(MODEL, version)
        iid = _promote(harness, registry, "1")
        head = repo.head(f"promote/{NAME}/production")
        assert head is not None
        changed = repo.git("show", "--name-only", "--format=", head).split()
        assert "CODEOWNERS" in changed
        assert anchor_path(NAME, "production") in changed
        assert f"deploy/{NAME}/overlays/production/kustomization.yaml" in changed
        text = repo.git("show", f"{head}:CODEOWNERS")
        assert text.startswith("* @platform\n# >>> promoter: owners")
        assert (f"/deploy/{NAME}/overlays/production/ @risk/compliance @risk/leads\n"
                "# <<< promoter: end of model directory owners\n[Docs]\n/docs/ @writers\n"
                ) in text
        assert harness.provider.get(iid).state == "opened"
        # the next version: a new commit for the manifests, the same CODEOWNERS text
        assert _promote(harness, registry, "2") == iid
        second = repo.head(f"promote/{NAME}/production")
        assert second != head
        assert repo.git("show", f"{second}:CODEOWNERS") == text
    finally:
        standin.stop()
