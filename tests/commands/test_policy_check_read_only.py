"""`promoter policy check` is a check: it writes nothing (not the state directory, its
database, nor any git repository, and it never re-points the local provider's shared clone),
and it answers offline, saying which checks it could not make because the target branch could
not be read (no GitLab token, GitLab unreachable)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.commands.test_policy_check import GATES
from tests.commands.test_render import VALID, write_intent
from tests.fixtures.mlflow_server import free_port

Run = Callable[..., tuple[int, str, str]]
TOKEN = "glpat-never-shown-1234"


def write(path: Path, document: dict[str, Any]) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def offline_gitlab(tmp_path: Path) -> str:
    """A GitLab provider whose server is a closed port on this host: nothing answers."""
    return write(tmp_path / "promoter.yaml", {
        "git": {"provider": "gitlab",
                "gitlab": {"url": f"http://127.0.0.1:{free_port()}", "project": "group/gitops",
                           "timeout_seconds": 5, "max_retry_wait_seconds": 1}},
        "policy": GATES})


def denied_intent(tmp_path: Path) -> Path:
    document = json.loads(json.dumps(VALID))
    document["spec"]["resources"] = {"gpu": {"count": 2}}   # over GATES' one-gpu gate
    return write_intent(tmp_path / "denied.yaml", document)


def test_gitlab_without_a_token_answers_and_says_what_it_did_not_check(
        run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMOTER_GITLAB_TOKEN", raising=False)
    config = offline_gitlab(tmp_path)
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    code, out, err = run_cli("--config", config, "policy", "check", "--intent", str(intent),
                             "--env", "staging")
    assert code == 0, out + err
    assert "NOT CHECKED  deployment name owned by another model on the target branch; " \
           "runtime switch under other environments' overlays" in out
    assert "PROMOTER_GITLAB_TOKEN is not set" in out
    assert out.rstrip().endswith("allowed")

    code, out, err = run_cli("--config", config, "policy", "check", "--intent",
                             str(denied_intent(tmp_path)), "--env", "staging",
                             "--output", "json")
    assert code == 4, out + err
    answer = json.loads(out)
    assert answer["allowed"] is False
    assert answer["reasons"] == ["cel:one-gpu: at most one GPU"]
    [unread] = answer["not_checked"]
    assert unread["checks"][0].startswith("deployment name owned")
    assert "PROMOTER_GITLAB_TOKEN is not set" in unread["reason"]
    assert not (tmp_path / "state").exists()


def test_gitlab_unreachable_answers_without_the_token_in_the_reason(
        run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTER_GITLAB_TOKEN", TOKEN)
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    code, out, err = run_cli("--config", offline_gitlab(tmp_path), "policy", "check",
                             "--intent", str(intent), "--env", "staging")
    assert code == 0, out + err
    assert "NOT CHECKED" in out and "the target branch could not be read" in out
    assert "retries the job" not in out + err    # the pipeline's hint, wrong for a command
    assert TOKEN not in out + err
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("existing", [True, False])
def test_a_fresh_state_directory_gets_nothing(run_cli: Run, tmp_path: Path,
                                              existing: bool) -> None:
    state = tmp_path / "state"     # run_cli's PROMOTER_STATE_DIR
    if existing:
        state.mkdir()
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    config = write(tmp_path / "promoter.yaml", {"policy": GATES})
    code, out, err = run_cli("--config", config, "policy", "check", "--intent", str(intent),
                             "--env", "staging")
    assert code == 0, out + err
    assert "NOT CHECKED" not in out   # no remote yet: nothing deployed, nothing owned
    code, out, err = run_cli("--config", config, "policy", "check", "--intent", str(intent),
                             "--env", "staging", "--output", "json")
    assert code == 0, out + err
    assert json.loads(out)["not_checked"] == []
    if existing:
        assert sorted(state.iterdir()) == []
    else:
        assert not state.exists()


def bare_repository(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    return path


def origin_of(clone: Path) -> str:
    return subprocess.run(["git", "--git-dir", str(clone), "config", "--get",
                           "remote.origin.url"], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_the_shared_clone_keeps_its_remote(run_cli: Run, tmp_path: Path) -> None:
    """A state directory `promoter serve` uses with git.remote A; `policy check` run there
    with a policy-only promoter.yaml (no git.remote) must not point serve's clone elsewhere,
    nor create the default remote."""
    remote = bare_repository(tmp_path / "A.git")
    served = write(tmp_path / "served.yaml", {"git": {"remote": str(remote)}, "policy": GATES})
    code, out, err = run_cli("--config", served, "mr", "list")
    assert code == 0, out + err
    clone = tmp_path / "state" / "git" / "work.git"
    assert origin_of(clone) == str(remote)
    before = sorted(path.name for path in (tmp_path / "state").iterdir())

    intent = write_intent(tmp_path / "intent.yaml", VALID)
    checking = write(tmp_path / "policy-only.yaml", {"policy": GATES})
    code, out, err = run_cli("--config", checking, "policy", "check", "--intent", str(intent),
                             "--env", "staging")
    assert code == 0, out + err
    assert origin_of(clone) == str(remote)
    assert not (tmp_path / "state" / "gitops.git").exists()
    assert sorted(path.name for path in (tmp_path / "state").iterdir()) == before


OTHER_MODELS_BASE = ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                     "commonAnnotations:\n  promoter.dev/registered-model: Other Model\n")


def git(*args: str, cwd: Path, stdin: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_a_local_remote_is_read_without_the_state_directory(run_cli: Run,
                                                            tmp_path: Path) -> None:
    """git.remote holds another model's base under the intent's deployment name: refused, as
    the pipeline refuses it, though no state directory (no ledger, no clone) exists; and the
    remote keeps its refs."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    base = work / "manifests" / "fraud-detector" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text(OTHER_MODELS_BASE)
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "deployed", cwd=work)
    remote = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(work), str(remote), cwd=tmp_path)
    refs = git("for-each-ref", cwd=remote)
    config = write(tmp_path / "promoter.yaml", {"git": {"remote": str(remote)}, "policy": GATES})
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    code, out, err = run_cli("--config", config, "policy", "check", "--intent", str(intent),
                             "--env", "staging")
    assert code == 1, out + err
    assert "models 'Other Model' and 'Fraud Detector' both become deployment " \
           "'fraud-detector'" in " ".join(err.split())
    assert not (tmp_path / "state").exists()
    assert git("for-each-ref", cwd=remote) == refs


def test_gitlab_with_a_token_reads_the_branch_through_the_api(
        run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a token, the target branch is read (read-only calls): a deployment name whose base
    another model's manifests hold there is refused, as the pipeline refuses it; and nothing
    is written to the state directory (no pushed-heads record is opened)."""
    from tests.gitlab.conftest import make_standin

    (tmp_path / "standin").mkdir()
    standin = make_standin(tmp_path / "standin")
    try:
        standin.repo.commit_actions("main", None, [{
            "action": "create", "file_path": "manifests/fraud-detector/base/kustomization.yaml",
            "content": OTHER_MODELS_BASE}],
            "An earlier deployment\n")
        monkeypatch.setenv("PROMOTER_GITLAB_TOKEN", "bot-token")
        config = write(tmp_path / "promoter.yaml", {
            "git": {"provider": "gitlab",
                    "gitlab": {"url": standin.base_url, "project": "group/gitops"}},
            "policy": GATES})
        intent = write_intent(tmp_path / "intent.yaml", VALID)
        code, out, err = run_cli("--config", config, "policy", "check", "--intent",
                                 str(intent), "--env", "staging")
    finally:
        standin.stop()
    assert code == 1, out + err
    assert "models 'Other Model' and 'Fraud Detector' both become deployment " \
           "'fraud-detector'" in " ".join(err.split())
    assert not (tmp_path / "state").exists()


def quota_config(tmp_path: Path, quota: int) -> str:
    return write(tmp_path / "promoter.yaml", {
        "git": {"provider": "gitlab",
                "gitlab": {"url": f"http://127.0.0.1:{free_port()}", "project": "group/gitops",
                           "timeout_seconds": 5, "max_retry_wait_seconds": 1}},
        "policy": {**GATES, "team_gpu_quota": {"risk": quota}}})


@pytest.mark.parametrize("token", [TOKEN, None])
def test_a_team_quota_the_branch_is_needed_for_is_not_checked(
        run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        token: str | None) -> None:
    """A quota is counted on the target branch: unread (GitLab unreachable with a token, or
    no token), the quota is one more check not made, said as the others are, and the rest is
    answered (exit 0), not exit 3 with a hint about a job to retry; nothing is written."""
    if token is None:
        monkeypatch.delenv("PROMOTER_GITLAB_TOKEN", raising=False)
    else:
        monkeypatch.setenv("PROMOTER_GITLAB_TOKEN", token)
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    config = quota_config(tmp_path, 4)
    code, out, err = run_cli("--config", config, "policy", "check", "--intent", str(intent),
                             "--env", "staging")
    assert code == 0, out + err
    assert "NOT CHECKED  deployment name owned by another model on the target branch; " \
           "runtime switch under other environments' overlays; team gpu quota (the target " \
           "branch could not be read: " in out
    assert "team gpu quota:" not in out       # no "pass" for a quota nobody counted
    assert "retries the job" not in out + err
    assert TOKEN not in out + err
    assert out.rstrip().endswith("allowed")
    code, out, err = run_cli("--config", config, "policy", "check", "--intent", str(intent),
                             "--env", "staging", "--output", "json")
    assert code == 0, out + err
    [unread] = json.loads(out)["not_checked"]
    assert unread["checks"][-1] == "team gpu quota"
    assert not (tmp_path / "state").exists()


def test_a_deployment_over_the_quota_alone_is_denied_unread(
        run_cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the team's other deployments claim only adds: a deployment over the quota on its
    own is denied though the branch could not be read (exit 4)."""
    monkeypatch.setenv("PROMOTER_GITLAB_TOKEN", TOKEN)
    document = json.loads(json.dumps(VALID))
    document["spec"]["resources"] = {"gpu": {"count": 1}}   # one GPU, the quota is 0
    intent = write_intent(tmp_path / "intent.yaml", document)
    code, out, err = run_cli("--config", quota_config(tmp_path, 0), "policy", "check",
                             "--intent", str(intent), "--env", "staging")
    assert code == 4, out + err
    assert "DENY  team gpu quota: risk claims" in out
    assert "runtime switch under other environments' overlays (the target branch" in out
