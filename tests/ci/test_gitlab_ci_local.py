"""The CI gate really runs: promoter's .gitlab-ci.yml and the generated GitOps one, with
gitlab-ci-local 4.56.0 in its shell executor, on a good tree, a broken overlay and an image
signed by another key; and each job's rules make it run only when it is relevant.

gitlab-ci-local runs a job in its shell executor only when the job has no image, and no
container runtime runs here: the tests drop the ``image`` keys from the copied file and change
nothing else. The jobs' before_script then installs what the image would lack (kubectl,
promoter) only when it is missing; on this machine both are present. The repositories are
real git repositories with an ``origin`` (gitlab-ci-local evaluates ``rules:changes`` against
``origin/<default branch>``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ci.local_runner import git, requires_gitlab_ci_local, without_images
from tests.conftest import ROOT, cli_runner, requires_kubectl
from tests.signing.conftest import PASSWORD, key_path, push_image
from tests.signing.conftest import registry as registry  # the session fixture

pytestmark = [
    pytest.mark.e2e,
    requires_kubectl,
    requires_gitlab_ci_local,
]
OVERLAY = "manifests/fraud-detector/overlays/production/kustomization.yaml"
def _project_ci(tmp_path: Path, capsys: Any) -> str:
    return (ROOT / ".gitlab-ci.yml").read_text()


def _generated_ci(tmp_path: Path, capsys: Any) -> str:
    config = tmp_path / "promoter.yaml"
    config.write_text(f"""
image: {{repository: "127.0.0.1:5000/models/{{name}}", verification_key: "{key_path(2, 'pub')}"}}
argocd: {{repo_url: "https://gitlab.example.com/platform/gitops.git"}}
""")
    out = tmp_path / "scaffold"
    code, _, err = cli_runner(capsys)("--config", str(config), "gitops", "init", "--out", str(out))
    assert code == 0, err
    return (out / ".gitlab-ci.yml").read_text()


CI_FILES = {"project": _project_ci, "generated": _generated_ci}


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path

    def commit(self, message: str) -> None:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-qm", message)

    def run(self, job: str, **variables: str) -> tuple[int, str]:
        args = ["gitlab-ci-local", "--variable", "CI_PIPELINE_SOURCE=merge_request_event",
                "--variable", f"PYTHONPATH={ROOT}"]
        for key, value in variables.items():
            args += ["--variable", f"{key}={value}"]
        result = subprocess.run([*args, job], cwd=self.path, capture_output=True, text=True,
                                timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return result.returncode, result.stdout + result.stderr

    def when(self, **variables: str) -> dict[str, str]:
        args = ["gitlab-ci-local", "--list-json", "--variable",
                "CI_PIPELINE_SOURCE=merge_request_event"]
        for key, value in variables.items():
            args += ["--variable", f"{key}={value}"]
        result = subprocess.run(args, cwd=self.path, capture_output=True, text=True,
                                timeout=120, check=True)
        return {job["name"]: job["when"] for job in json.loads(result.stdout)}


@pytest.fixture(params=sorted(CI_FILES))
def repo(request: pytest.FixtureRequest, tmp_path: Path, capsys: Any) -> Repo:
    """A GitOps repository on a merge-request branch: main holds the CI file and manifests/."""
    ci = CI_FILES[request.param](tmp_path, capsys)
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / ".gitlab-ci.yml").write_text(without_images(ci))
    shutil.copytree(ROOT / "manifests", work / "manifests")
    _unpin_stand_ins(work / "manifests")
    repo = Repo(work)
    repo.commit("main")
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "-q", "origin", "main")
    git(work, "fetch", "-q", "origin")
    git(work, "remote", "set-head", "origin", "main")
    git(work, "checkout", "-qb", "promote/fraud-detector/production")
    return repo


STAND_IN = re.compile(r'\n  digest: "?sha256:1{64}"?')


def _unpin_stand_ins(tree: Path) -> None:
    """The reference tree pins stand-in digests nothing signed; the CI gate verifies every
    pinned image, so the copied tree starts unpinned (a tag) and each test pins what it signs."""
    for path in tree.glob("*/overlays/*/kustomization.yaml"):
        path.write_text(STAND_IN.sub("\n  newTag: v0", path.read_text()))


def _keep_only_the_promoted_overlay(repo: Repo) -> None:
    """The signatures job verifies every image the built overlays pull; the reference tree's
    other overlays pin stand-in modelcar digests nobody signed and name the vLLM and Triton
    server images by tag, so a signature test keeps only the overlay it signs."""
    manifests = repo.path / "manifests"
    for model in manifests.iterdir():
        if model.is_dir() and model.name != "fraud-detector":
            shutil.rmtree(model)
    shutil.rmtree(manifests / "fraud-detector/overlays/staging")


def _pin(repo: Repo, reference: str) -> None:
    """Pin the overlay's serving image by digest, as promoter renders it."""
    path = repo.path / OVERLAY
    name, digest = reference.split("@")
    text = re.sub(r'(images:\n- name: serving-image\n  newName: )"?[^\n"]+"?\n  newTag: [^\n]+',
                  rf'\g<1>"{name}"\n  digest: {digest}', path.read_text())
    assert digest in text
    path.write_text(text)


@pytest.fixture
def signed_image(registry: str,
                 monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Callable[..., str]:
    def make(key: int) -> str:
        reference = push_image(registry, f"models/fraud-detector-{key}", os.urandom(8).hex())
        monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
        code, _, err = cli_runner(capsys)("image", "sign", reference, "--key",
                                          str(key_path(key)))
        assert code == 0, err
        return reference

    return make


def test_good_tree_passes_validate_and_signature_check(repo: Repo,
                                                       signed_image: Callable[..., str]) -> None:
    reference = signed_image(2)
    _keep_only_the_promoted_overlay(repo)
    _pin(repo, reference)
    repo.commit("promote fraud-detector v7 to production")
    code, out = repo.run("manifests:validate")
    assert code == 0, out
    assert "PASS" in out and "ok   manifests/fraud-detector/overlays/production" in out
    code, out = repo.run("manifests:signatures", COSIGN_PUBLIC_KEY=str(key_path(2, "pub")))
    assert code == 0, out
    assert reference in out and "PASS" in out


def test_broken_overlay_fails_validate(repo: Repo) -> None:
    path = repo.path / OVERLAY
    path.write_text(path.read_text().replace("- ../../base", "- ../../no-such-base"))
    repo.commit("break the overlay")
    code, out = repo.run("manifests:validate")
    assert code != 0
    assert "FAIL" in out and "no-such-base" in out


def test_image_signed_by_another_key_fails_the_signature_check(
        repo: Repo, signed_image: Callable[..., str]) -> None:
    _keep_only_the_promoted_overlay(repo)
    _pin(repo, signed_image(1))
    repo.commit("promote an image signed elsewhere")
    code, out = repo.run("manifests:signatures", COSIGN_PUBLIC_KEY=str(key_path(2, "pub")))
    assert code != 0
    assert "FAIL" in out and "not by the key" in out


def test_an_image_pinned_by_tag_fails_the_signature_check(repo: Repo) -> None:
    """The copied tree names the serving image by tag (``newTag: v0``): nothing would be
    verified, so the gate refuses it, naming the overlay, the object and the reference."""
    _keep_only_the_promoted_overlay(repo)
    (repo.path / OVERLAY).write_text((repo.path / OVERLAY).read_text() + "# reviewed\n")
    repo.commit("promote by tag")
    code, out = repo.run("manifests:signatures", COSIGN_PUBLIC_KEY=str(key_path(2, "pub")))
    assert code != 0
    assert "FAIL" in out
    assert ("manifests/fraud-detector/overlays/production: Deployment/fraud-detector "
            "spec.template.spec.containers[0].image:") in out
    assert "is not pinned by digest" in out


def _main_sha(repo: Repo) -> str:
    return subprocess.run(["git", "rev-parse", "origin/main"], cwd=repo.path, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_policy_check_passes_allowed_and_fails_denied_changed_overlays(
        repo: Repo, tmp_path: Path) -> None:
    path = repo.path / "manifests/llm-chat/overlays/production/kustomization.yaml"
    path.write_text(path.read_text() + "# reviewed\n")
    repo.commit("touch llm-chat production")
    allowed = tmp_path / "allowed.yaml"
    allowed.write_text((ROOT / "examples/promoter.yaml").read_text())
    code, out = repo.run("manifests:policy", PROMOTER_CONFIG=str(allowed),
                         CI_MERGE_REQUEST_DIFF_BASE_SHA=_main_sha(repo))
    assert code == 0, out
    assert "ok    manifests/llm-chat/overlays/production" in out
    assert "ok    manifests/fraud-detector" not in out   # not changed: not judged
    denied = tmp_path / "denied.yaml"
    denied.write_text(allowed.read_text().replace(
        "allowed_gpu_types: [NVIDIA-L40S, NVIDIA-A100-SXM4-80GB, NVIDIA-H100-80GB-HBM3]",
        "allowed_gpu_types: [NVIDIA-H100-80GB-HBM3]"))
    assert denied.read_text() != allowed.read_text()
    code, out = repo.run("manifests:policy", PROMOTER_CONFIG=str(denied),
                         CI_MERGE_REQUEST_DIFF_BASE_SHA=_main_sha(repo))
    assert code != 0
    assert "DENY  manifests/llm-chat/overlays/production" in out and "NVIDIA-L40S" in out


def _without_l40s(tmp_path: Path) -> Path:
    """The example promoter.yaml, with NVIDIA-L40S (llm-chat's GPU) no longer allowed."""
    allowed = (ROOT / "examples/promoter.yaml").read_text()
    denied = tmp_path / "denied.yaml"
    denied.write_text(allowed.replace(
        "allowed_gpu_types: [NVIDIA-L40S, NVIDIA-A100-SXM4-80GB, NVIDIA-H100-80GB-HBM3]",
        "allowed_gpu_types: [NVIDIA-H100-80GB-HBM3]"))
    assert denied.read_text() != allowed
    return denied


def test_policy_check_judges_the_overlays_of_a_changed_base(repo: Repo, tmp_path: Path) -> None:
    """An MR changing only llm-chat's base/ (where GPUs or node selection could be added)
    gets both llm-chat overlays judged."""
    path = repo.path / "manifests/llm-chat/base/inferenceservice.yaml"
    path.write_text(path.read_text() + "# reviewed\n")
    repo.commit("touch llm-chat base")
    code, out = repo.run("manifests:policy", PROMOTER_CONFIG=str(_without_l40s(tmp_path)),
                         CI_MERGE_REQUEST_DIFF_BASE_SHA=_main_sha(repo))
    assert code != 0
    assert "DENY  manifests/llm-chat/overlays/production" in out and "NVIDIA-L40S" in out


def test_policy_check_sums_the_team_gpu_quota_over_the_whole_tree(repo: Repo,
                                                                   tmp_path: Path) -> None:
    """An MR adding a second assistants model: 8 GPUs each in production fit a quota of 12
    alone, not together."""
    shutil.copytree(repo.path / "manifests/llm-chat", repo.path / "manifests/llm-chat-2")
    repo.commit("add llm-chat-2")
    config = tmp_path / "quota.yaml"
    config.write_text((ROOT / "examples/promoter.yaml").read_text().replace(
        "policy:\n", "policy:\n  team_gpu_quota: {assistants: 12}\n", 1))
    code, out = repo.run("manifests:policy", PROMOTER_CONFIG=str(config),
                         CI_MERGE_REQUEST_DIFF_BASE_SHA=_main_sha(repo))
    assert code != 0
    assert "DENY  manifests/llm-chat-2/overlays/production" in out
    assert "assistants claims 16 GPUs in production" in out and "quota of 12" in out


def test_jobs_run_only_when_relevant(repo: Repo) -> None:
    gate = ("manifests:validate", "manifests:policy", "manifests:signatures",
            "manifests:keyless-sign")
    assert {job: repo.when()[job] for job in gate} == dict.fromkeys(gate, "never")
    (repo.path / OVERLAY).write_text((repo.path / OVERLAY).read_text() + "# reviewed\n")
    repo.commit("touch manifests/")
    when = repo.when()
    assert when["manifests:validate"] == "on_success"
    assert when["manifests:signatures"] == "never"        # no COSIGN_PUBLIC_KEY variable
    assert when["manifests:policy"] == "never"            # no PROMOTER_CONFIG variable
    assert repo.when(PROMOTER_CONFIG="p")["manifests:policy"] == "on_success"
    assert when["manifests:keyless-sign"] == "never"      # keyless signing not turned on
    assert repo.when(COSIGN_PUBLIC_KEY="k")["manifests:signatures"] == "on_success"
    # Keyless signing is for reviewed content only: never on a merge request.
    assert repo.when(PROMOTER_KEYLESS_SIGNING="true")["manifests:keyless-sign"] == "never"


def test_keyless_signing_runs_on_the_merge_into_the_protected_default_branch(
        repo: Repo) -> None:
    git(repo.path, "checkout", "-q", "main")
    (repo.path / OVERLAY).write_text((repo.path / OVERLAY).read_text() + "# merged\n")
    repo.commit("merge: touch manifests/")

    def keyless(**variables: str) -> str:
        return repo.when(CI_PIPELINE_SOURCE="push", PROMOTER_KEYLESS_SIGNING="true",
                         **variables)["manifests:keyless-sign"]

    assert keyless(CI_COMMIT_REF_PROTECTED="true") == "on_success"
    assert keyless(CI_COMMIT_REF_PROTECTED="false") == "never"
    assert repo.when(CI_PIPELINE_SOURCE="push", CI_COMMIT_REF_PROTECTED="true")[
        "manifests:keyless-sign"] == "never"                   # not turned on
