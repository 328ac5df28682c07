"""`promoter gitops policy --changed-from`: the overlays a merge request can affect are every
overlay that reaches a changed path, whatever model directory it lives in.

The selection went by layout alone: a change under ``code-assistant/`` selected
code-assistant's overlays, though llm-chat's production overlay read a component there
(``components: [../../../code-assistant/gpu]``). A merge request editing only that component
changed what llm-chat deploys (here: an affinity to a GPU its node selector excludes) and CI
passed it, while the full-tree check denied it. Real git histories, real `kubectl kustomize`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from promoter.gitops.policy import changed_overlays
from promoter.service import composition
from tests.ci.local_runner import git
from tests.conftest import EXAMPLES, ROOT, cli_runner, requires_kubectl
from tests.gitops.test_policy_gate_references import _add, _built

pytestmark = requires_kubectl

COMPONENT = """apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
patches:
- target: {kind: InferenceService}
  path: cap.yaml
"""
CAP = "- {op: replace, path: /spec/predictor/maxReplicas, value: 2}\n"
# Allowed alone, but llm-chat's node selector asks for NVIDIA-L40S: no node satisfies both.
T4_AFFINITY = ("- {op: add, path: /spec/predictor/affinity, value: {nodeAffinity: "
               "{requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: "
               "[{matchExpressions: [{key: nvidia.com/gpu.product, operator: In, "
               "values: [NVIDIA-T4]}]}]}}}}\n")
LLM_PRODUCTION = "manifests/llm-chat/overlays/production"
CODE_ASSISTANT = ["manifests/code-assistant/overlays/production",
                  "manifests/code-assistant/overlays/staging"]


def _merge_request(tmp_path: Path, component: str, change: Callable[[Path], None]) -> Path:
    """A GitOps repository whose main has llm-chat's production overlay reading the component
    ``manifests/<component>`` (one commit, every overlay building), then one commit making
    ``change``: the merge request."""
    repo = tmp_path / "gitops"
    shutil.copytree(ROOT / "manifests", repo / "manifests")
    shared = repo / "manifests" / component
    shared.mkdir(parents=True)
    (shared / "kustomization.yaml").write_text(COMPONENT)
    (shared / "cap.yaml").write_text(CAP)
    _add(repo / LLM_PRODUCTION / "kustomization.yaml", "components", f"../../../{component}")
    _built(repo / LLM_PRODUCTION)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    change(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "merge request")
    return repo


def _selected(repo: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(repo)
    return [path.relative_to(repo.resolve()).as_posix() for path in
            changed_overlays([Path("manifests")], composition.changed_files("HEAD~1"))]


def _edit_cap(component: str) -> Callable[[Path], None]:
    return lambda repo: (repo / "manifests" / component / "cap.yaml").write_text(T4_AFFINITY)


def test_a_change_to_another_models_directory_that_an_overlay_reads_is_judged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _merge_request(tmp_path, "code-assistant/gpu", _edit_cap("code-assistant/gpu"))
    assert _selected(repo, monkeypatch) == [*CODE_ASSISTANT, LLM_PRODUCTION]
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                        "policy", "manifests/", "--changed-from", "HEAD~1",
                                        "--output", "json")
    assert code == 4, err
    verdicts = {v["overlay"]: v for v in json.loads(out)}
    assert sorted(verdicts) == [*CODE_ASSISTANT, LLM_PRODUCTION]
    assert not verdicts[LLM_PRODUCTION]["allowed"]
    assert "NVIDIA-T4" in " ".join(verdicts[LLM_PRODUCTION]["reasons"])
    assert all(verdicts[overlay]["allowed"] for overlay in CODE_ASSISTANT)


def _delete_the_component(repo: Path) -> None:
    shutil.rmtree(repo / "manifests/code-assistant/gpu")


def _delete_a_file_it_names(repo: Path) -> None:
    (repo / "manifests/code-assistant/gpu/cap.yaml").unlink()


@pytest.mark.parametrize("delete", [_delete_the_component, _delete_a_file_it_names])
def test_deleting_what_an_overlay_reads_in_another_models_directory_is_judged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        delete: Callable[[Path], None]) -> None:
    """The walk is of the tree the merge request leaves: the overlay still names the deleted
    path, so it is selected, and its build fails, which the gate denies."""
    repo = _merge_request(tmp_path, "code-assistant/gpu", delete)
    assert _selected(repo, monkeypatch) == [*CODE_ASSISTANT, LLM_PRODUCTION]
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"), "gitops",
                                        "policy", "manifests/", "--changed-from", "HEAD~1",
                                        "--output", "json")
    assert code == 4, err
    denied = [v["overlay"] for v in json.loads(out) if not v["allowed"]]
    assert denied == [LLM_PRODUCTION]


def test_a_shared_component_changed_alone_selects_the_overlay_reading_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside any model directory: every overlay, as before (the floor by layout)."""
    repo = _merge_request(tmp_path, "_shared/gpu", _edit_cap("_shared/gpu"))
    selected = _selected(repo, monkeypatch)
    assert LLM_PRODUCTION in selected
    assert selected == sorted(p.relative_to(repo).as_posix()
                              for p in (repo / "manifests").glob("*/overlays/*"))


def _edit(path: str) -> Callable[[Path], None]:
    def change(repo: Path) -> None:
        file = repo / path
        file.write_text(file.read_text() + "# reviewed\n")
    return change


@pytest.mark.parametrize(("path", "expected"), [
    # an overlay's own file: that overlay only, though it reads another model's directory
    (f"{LLM_PRODUCTION}/patch-inferenceservice.yaml", [LLM_PRODUCTION]),
    # a model's base/: that model's overlays; llm-chat reads code-assistant/gpu, not its base
    ("manifests/code-assistant/base/deployment.yaml", CODE_ASSISTANT),
    ("manifests/llm-chat/base/inferenceservice.yaml",
     [LLM_PRODUCTION, "manifests/llm-chat/overlays/staging"]),
])
def test_what_no_other_model_reads_selects_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str,
        expected: list[str]) -> None:
    repo = _merge_request(tmp_path, "code-assistant/gpu", _edit(path))
    assert _selected(repo, monkeypatch) == expected
