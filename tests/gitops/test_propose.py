"""The local provider's first commit holds the scaffolding; `gitops init --propose` opens one
MR when it is missing or out of date, and none when the target branch already has it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promoter.service import composition
from promoter.settings import load_settings
from tests.conftest import cli_runner
from tests.signing.conftest import key_path


def _config(tmp_path: Path, *, key: bool) -> Path:
    path = tmp_path / "promoter.yaml"
    image = f'"{key_path(2, "pub")}"' if key else "null"
    path.write_text(f'state_dir: "{tmp_path / "state"}"\n'
                    f'image: {{repository: "127.0.0.1:5000/models/{{name}}", '
                    f"verification_key: {image}}}\n")
    return path


def test_first_commit_of_the_local_provider_holds_the_scaffolding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(_config(tmp_path, key=True), environ={})
    provider = composition.provider(settings)
    assert sorted(provider.files("argocd/", "main")) == ["argocd/applicationset.yaml",
                                                 "argocd/appproject.yaml",
                                                 "argocd/kustomization.yaml",
                                                 "argocd/notifications.yaml"]
    policy = provider.read("policies/clusterimagepolicy.yaml", "main") or ""
    assert key_path(2, "pub").read_text().strip().splitlines()[1] in policy
    assert provider.read(".gitlab-ci.yml", "main")
    code, out, err = cli_runner(capsys)("--config", str(_config(tmp_path, key=True)), "gitops",
                                        "init", "--propose", "--output", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["written"] == [] and report["mr_iid"] is None


def test_propose_opens_one_merge_request_when_the_scaffolding_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    without_key = load_settings(_config(tmp_path, key=False), environ={})
    assert sorted(composition.provider(without_key).files("argocd/", "main")) == []  # no key yet
    run = cli_runner(capsys)
    config = _config(tmp_path, key=True)
    code, out, err = run("--config", str(config), "gitops", "init", "--propose",
                         "--output", "json")
    assert code == 0, err
    first = json.loads(out)
    assert first["mr_iid"] == 1 and ".gitlab-ci.yml" in first["written"]
    code, out, _ = run("--config", str(config), "gitops", "init", "--propose", "--output", "json")
    assert json.loads(out)["mr_iid"] == 1                     # the same MR, not a second one
    code, out, _ = run("--config", str(config), "mr", "list", "--output", "json")
    assert len(json.loads(out)) == 1
