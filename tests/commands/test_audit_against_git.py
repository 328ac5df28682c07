"""`promoter audit verify --against-git`: promotions through the local git provider anchor the
audit head in the GitOps repository; a local trail rewritten and re-sealed end to end passes
the local check and fails the comparison with git (exit 1, naming the anchor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoter.core import audit_anchor
from promoter.core.audit_chain import head_of
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.rendering import renderer
from promoter.service import composition
from promoter.service.audit import AuditTrail
from promoter.settings import load_settings
from tests.conftest import cli_runner
from tests.core.test_audit_anchor import reseal_from
from tests.core.test_pipeline import (
    MODEL,
    NAME,
    CountingImages,
    MemoryLedger,
    MemoryRegistry,
    MemorySteps,
)


def test_a_rewritten_trail_is_caught_against_the_heads_anchored_in_git(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "promoter.yaml"
    # The kserve runtime runs a modelcar: its (counted, not pushed) build needs a repository.
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n'
                      'image: {modelcar_repository: "registry.test/models/{name}"}\n')
    settings = load_settings(config, environ={})
    trail = AuditTrail(settings.state_dir)
    for version in ("1", "2", "3"):
        trail.record("job.created", actor="webhook:mlflow", model=MODEL, version=version)
    registry = MemoryRegistry()
    registry.add(MODEL, "3")
    registry.set_alias(MODEL, "production", "3")
    provider = composition.provider(settings)
    ports = Ports(registry, provider, MemoryLedger(), renderer(settings), CountingImages(),
                  audit=trail)
    result = Pipeline(settings.pipeline_config(), ports).run(
        PromotionJob(MODEL, "production", "promote", "3"), MemorySteps())
    branch = f"promote/{NAME}/production"
    assert result.mr_iid is not None
    anchored = provider.read(audit_anchor.anchor_path(NAME, "production"), branch)
    assert anchored is not None and json.loads(anchored)["seq"] == 3
    trail.record("mr.opened", actor="test", model=MODEL, version="3")   # the trail goes on
    again = Pipeline(settings.pipeline_config(), ports).run(
        PromotionJob(MODEL, "production", "promote", "3"), MemorySteps())
    assert again.outcome == "unchanged" and not again.commit_created   # a moved head alone
    assert provider.read(audit_anchor.anchor_path(NAME, "production"), branch) == anchored

    run = cli_runner(capsys)
    code, out, err = run("--config", str(config), "audit", "verify", "--against-git",
                         "--ref", branch)
    assert code == 0, err
    assert "1 audit head(s) anchored in git" in out
    code, out, _ = run("--config", str(config), "audit", "verify", "--against-git")
    assert code == 0 and "no audit heads anchored in git at main" in out  # not merged yet

    # Rewrite entry 2 and re-seal everything after it, audit.head included: locally consistent.
    lines = list(trail.lines())
    rewritten = reseal_from(lines, 1, version="2-rewritten")
    trail.path.write_text("\n".join(rewritten) + "\n")
    last = head_of(json.loads(rewritten[-1]))
    trail.head_path.write_text(json.dumps({"seq": last.seq, "hash": last.hash}))
    code, out, _ = run("--config", str(config), "audit", "verify")
    assert code == 0 and "4 chained entries" in out
    code, out, err = run("--config", str(config), "audit", "verify", "--against-git",
                         "--ref", branch, "--output", "json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["problem"] is None    # the local check passed
    (finding,) = report["git"]["findings"]
    assert finding["anchor"] == audit_anchor.anchor_path(NAME, "production")
    assert finding["seq"] == 3 and "rewritten" in finding["problem"]
    code, _, err = run("--config", str(config), "audit", "verify", "--against-git",
                       "--ref", branch)
    assert code == 1 and "entry 3 has hash" in err and "the local trail was rewritten" in err


def test_ref_needs_against_git(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "promoter.yaml"
    # The kserve runtime runs a modelcar: its (counted, not pushed) build needs a repository.
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n'
                      'image: {modelcar_repository: "registry.test/models/{name}"}\n')
    code, _, err = cli_runner(capsys)("--config", str(config), "audit", "verify", "--ref", "x")
    assert code == 2 and "--against-git" in err
