"""Rollback, decommission and `promoter promote` through the embedded local git provider: a real
mlflow server, real webhooks into `promoter serve`, a real bare git remote, `promoter mr`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import (
    CosignKeys,
    ServeProcess,
    all_settled,
    mlflow_client,
    mlflow_webhook,
    promoter_environ,
    queue_jobs,
    register_model_version,
    start_serve,
    version_tags,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
Cli = Callable[..., tuple[int, str, str]]


@dataclass
class LocalStack:
    mlflow: MlflowServer
    serve: ServeProcess
    config: Path
    state_dir: Path

    @property
    def remote(self) -> Path:
        return self.state_dir / "gitops.git"  # the local provider's bare remote

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.remote, capture_output=True, text=True,
                              check=False, timeout=30).stdout

    def model_version_on(self, ref: str, name: str, env: str) -> str | None:
        text = self.git("show", f"{ref}:manifests/{name}/overlays/{env}/kustomization.yaml")
        for line in text.splitlines():
            if "promoter.dev/model-version:" in line:
                return line.split(":", 1)[1].strip().strip('"')
        return None

    def paths(self, ref: str, name: str) -> set[str]:
        return set(self.git("ls-tree", "-r", "--name-only", ref, "--",
                            f"manifests/{name}").split())


@pytest.fixture(scope="module")
def local(mlflow_server: MlflowServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """`promoter serve` with the local provider; no image repository, so jobs are quick."""
    root = tmp_path_factory.mktemp("local-stack")
    config = write_config(root / "promoter.yaml", state_dir=root / "state",
                          mlflow_url=mlflow_server.url)
    serve = start_serve(config, promoter_environ(), root / "serve.log")
    try:
        with mlflow_webhook(mlflow_server.url, f"{serve.url}/webhooks/mlflow"):
            yield LocalStack(mlflow_server, serve, config, root / "state")
    finally:
        serve.stop()



def settle(local: LocalStack, model: str, count: int) -> list[Any]:
    """Wait until the model has at least ``count`` jobs and all of them are done."""
    def probe() -> list[Any] | None:
        jobs = queue_jobs(local.state_dir, model)
        failing = [job for job in jobs if job.state == "dead"
                   or (job.state == "retrying" and job.attempts >= 3)]
        assert not failing, f"job {failing[0].id} {failing[0].state}: {failing[0].reason}"
        return jobs if len(jobs) >= count and all_settled(jobs) else None

    return wait_for(probe, 90, f"{count} settled jobs of {model}", log=local.serve.log)


def open_mrs(promoter: Cli, local: LocalStack, model: str) -> list[dict[str, Any]]:
    code, out, err = promoter("--config", str(local.config), "mr", "list", "--output", "json")
    assert code == 0, err
    return [mr for mr in json.loads(out) if mr["source_branch"].startswith(f"promote/{model}/")]


def test_moving_the_alias_back_updates_the_mr_to_the_older_version(
        local: LocalStack, promoter: Cli) -> None:
    model, url = "rollback-model", local.mlflow.url
    first, second = (register_model_version(url, model) for _ in range(2))
    client = mlflow_client(url)
    client.set_registered_model_alias(model, "production", first)
    settle(local, model, 1)
    [mr] = open_mrs(promoter, local, model)
    branch = mr["source_branch"]
    assert local.model_version_on(branch, model, "production") == first

    client.set_registered_model_alias(model, "production", second)
    settle(local, model, 2)
    assert local.model_version_on(branch, model, "production") == second
    client.set_registered_model_alias(model, "production", first)  # the rollback
    jobs = settle(local, model, 3)

    assert [m["iid"] for m in open_mrs(promoter, local, model)] == [mr["iid"]]  # same MR
    assert local.model_version_on(branch, model, "production") == first
    assert int(local.git("rev-list", "--count", f"main..{branch}")) == 1
    newest = max(jobs, key=lambda job: job.id)
    assert newest.result["version"] == first and newest.result["outcome"] == "updated"
    assert version_tags(url, model, first)["promoter.production.status"] == "mr_opened"
    code, out, _ = promoter("--config", str(local.config), "mr", "show", str(mr["iid"]))
    assert code == 0 and f"version {first}" in out


def merge(promoter: Cli, local: LocalStack, iid: int) -> None:
    for verb in ("approve", "merge"):
        code, out, err = promoter("--config", str(local.config), "mr", verb, str(iid),
                                  "--user", "alice")
        assert code == 0, out + err


def test_deleting_aliases_decommissions_the_overlay_then_the_base(
        local: LocalStack, promoter: Cli) -> None:
    model, url = "decom-model", local.mlflow.url
    version = register_model_version(url, model)
    client = mlflow_client(url)
    for env in ("staging", "production"):
        client.set_registered_model_alias(model, env, version)
    settle(local, model, 2)
    for mr in open_mrs(promoter, local, model):
        merge(promoter, local, mr["iid"])
    base, staging, production = (f"manifests/{model}/{part}/" for part in
                                 ("base", "overlays/staging", "overlays/production"))
    on_main = local.paths("main", model)
    assert all(any(p.startswith(d) for p in on_main) for d in (base, staging, production))
    assert version_tags(url, model, version)["promoter.production.status"] == "merged"

    client.delete_registered_model_alias(model, "production")
    settle(local, model, 3)
    [mr] = open_mrs(promoter, local, model)
    assert "Decommission" in mr["title"] and mr["source_branch"].endswith("/production")
    left = local.paths(mr["source_branch"], model)
    assert not any(p.startswith(production) for p in left)
    assert any(p.startswith(base) for p in left) and any(p.startswith(staging) for p in left)
    tags = version_tags(url, model, version)
    assert tags["promoter.production.status"] == "decommissioning"
    merge(promoter, local, mr["iid"])
    tags = version_tags(url, model, version)
    assert tags["promoter.staging.status"] == "merged"
    assert tags["promoter.production.status"] == "decommissioned"  # approving kept the flag

    client.delete_registered_model_alias(model, "staging")  # no environment remains
    settle(local, model, 4)
    [mr] = open_mrs(promoter, local, model)
    assert mr["source_branch"].endswith("/staging")
    assert local.paths(mr["source_branch"], model) == set()  # overlay and base removed
    merge(promoter, local, mr["iid"])
    assert local.paths("main", model) == set()
    assert open_mrs(promoter, local, model) == []

    # Retired everywhere, the model gave its deployment name up: another model deriving the
    # same name takes it over, and the outcome of that MR is the newcomer's.
    heir = "Decom Model"
    heir_version = register_model_version(url, heir)
    client.set_registered_model_alias(heir, "staging", heir_version)
    settle(local, heir, 1)
    [mr] = open_mrs(promoter, local, model)
    assert version_tags(url, heir, heir_version)["promoter.staging.status"] == "mr_opened"
    merge(promoter, local, mr["iid"])
    assert version_tags(url, heir, heir_version)["promoter.staging.status"] == "merged"
    assert version_tags(url, model, version)["promoter.staging.status"] == "decommissioned"


def test_promote_prints_each_step_and_ends_in_an_mr(
        mlflow_server: MlflowServer, stack_registry: str, cosign_keys: CosignKeys,
        promoter: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The synchronous path: no serve, the CLI works the job itself and reports every step."""
    model, url = "promote-cli-model", mlflow_server.url
    version = register_model_version(url, model)
    mlflow_client(url).set_registered_model_alias(model, "staging", version)
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=url, registry=stack_registry, keys=cosign_keys)
    monkeypatch.setenv("COSIGN_PASSWORD", cosign_keys.password)
    from promoter.service.queue import JobKey, JobQueue

    queue = JobQueue.open(tmp_path / "state")  # another model's job, waiting for `serve`
    other_job = queue.enqueue(JobKey("someone-elses-model", "1", "staging", "promote")).job
    code, out, err = promoter("--config", str(config), "promote", model, "--version", version,
                              "--env", "staging")
    assert code == 0, out + err
    assert queue.get(other_job.id).state == "queued"  # promote ran its own job only
    queue.close()
    for step in ("resolve", "policy", "image", "sign", "render", "merge request",
                 "write-back"):
        assert f" {step} " in out, out
    assert "done: created" in out and f"version {version}" in out
    assert "merge request: " in out and "signature: signed" in out
    assert "@sha256:" in out
    tags = version_tags(url, model, version)
    assert tags["promoter.staging.status"] == "mr_opened"
    assert tags["promoter.staging.image"].split("@")[0].endswith(f"/models/{model}")
    # Promoting the same version again finds the finished job instead of redoing it, and
    # says its result is of then: its MR was not created now.
    code, out, err = promoter("--config", str(config), "promote", model, "--version", version,
                              "--env", "staging")
    assert code == 0 and "existing job, done" in out, out + err
    assert "; nothing ran now): created" in out and "done: " not in out, out
    # A version the alias does not point at is not deployed: the job deploys what it points at.
    other = register_model_version(url, model)
    code, out, _ = promoter("--config", str(config), "promote", model, "--version", other,
                            "--env", "staging")
    assert code == 0 and f"version {version}" in out and "unchanged" in out


def test_audit_live_answers_what_ran_across_promote_rollback_and_decommission(
        local: LocalStack, promoter: Cli) -> None:
    import time

    model, url = "audit-live-model", local.mlflow.url
    first, second = (register_model_version(url, model) for _ in range(2))
    client = mlflow_client(url)
    moments: list[float] = []
    jobs = 0

    def live_tag() -> str | None:
        return client.get_registered_model(model).tags.get("promoter.production.live_version")

    replaced: list[tuple[str, str]] = []
    for version in (first, second, first):             # promote, promote, roll back
        client.set_registered_model_alias(model, "production", version)
        jobs += 1
        settle(local, model, jobs)
        [mr] = open_mrs(promoter, local, model)
        merge(promoter, local, mr["iid"])
        time.sleep(0.02)
        moments.append(time.time())
        assert live_tag() == version
        other = second if version == first else first
        status = version_tags(url, model, other).get("promoter.production.status", "")
        replaced.append((other, status))
    assert replaced[1:] == [(first, "superseded"), (second, "rolled_back")]
    client.delete_registered_model_alias(model, "production")
    settle(local, model, jobs + 1)
    [mr] = open_mrs(promoter, local, model)
    merge(promoter, local, mr["iid"])
    time.sleep(0.02)
    moments.append(time.time())
    assert live_tag() is None
    assert version_tags(url, model, first)["promoter.production.status"] == "decommissioned"

    def live_at(moment: float) -> str | None:
        code, out, err = promoter("--config", str(local.config), "audit", "live", "--env",
                                  "production", "--model", model, "--at", str(moment),
                                  "--output", "json")
        assert code == 0, err
        rows = json.loads(out)["live"]
        return rows[0]["version"] if rows else None

    assert [live_at(moment) for moment in moments] == [first, second, first, None]
    assert live_at(moments[0] - 3600) is None
    code, out, err = promoter("--config", str(local.config), "audit", "verify")
    assert code == 0 and out.startswith("ok: "), err
    code, out, _ = promoter("--config", str(local.config), "audit", "show", "--model", model,
                            "--env", "production", "--output", "json")
    merges = [entry for entry in json.loads(out) if entry["event"] == "mr.merge"]
    assert [(e["version"], e["actor"]) for e in merges] == [
        (first, "alice"), (second, "alice"), (first, "alice"), (first, "alice")]
    assert merges[-1]["status"] == "decommissioned"


def test_rollback_moves_the_alias_back_and_the_pipeline_opens_the_mr(
        local: LocalStack, promoter: Cli) -> None:
    model, url = "rollback-cli-model", local.mlflow.url
    first, second = (register_model_version(url, model) for _ in range(2))
    client = mlflow_client(url)
    for jobs, version in enumerate((first, second), start=1):
        client.set_registered_model_alias(model, "production", version)
        settle(local, model, jobs)
        [mr] = open_mrs(promoter, local, model)
        merge(promoter, local, mr["iid"])
    assert local.model_version_on("main", model, "production") == second

    code, out, err = promoter("--config", str(local.config), "rollback", model,
                              "--env", "production", "--output", "json")
    assert code == 0, out + err
    job = json.loads(out)
    assert job["state"] == "done" and job["result"]["version"] == first
    assert client.get_registered_model(model).aliases["production"] == first
    [mr] = open_mrs(promoter, local, model)
    assert mr["iid"] == job["result"]["mr_iid"]
    assert local.model_version_on(mr["source_branch"], model, "production") == first
    code, out, _ = promoter("--config", str(local.config), "audit", "show", "--model", model,
                            "--output", "json")
    rollbacks = [e for e in json.loads(out) if e["event"] == "rollback"]
    assert [(e["version"], e["previous"]) for e in rollbacks] == [(first, second)]

    code, _, err = promoter("--config", str(local.config), "rollback", "no-history-model",
                            "--env", "production")
    # Nothing ever ran there: nothing to go back to, and no --to-version could be (each is
    # refused as never live); the hint is to promote one.
    assert code == 1 and "nothing to roll back to" in err and "promoter promote" in err, err


def test_a_rollback_to_a_version_never_live_there_is_refused(
        local: LocalStack, promoter: Cli) -> None:
    """Production ran 1 then 2; version 3 never ran there: rolling "back" to it is refused
    before anything moves (before: the alias moved to 3, an MR opened, audited as a rollback)."""
    model = "rollback-forward-model"
    first, second = _two_merged_versions(local, promoter, model)
    third = register_model_version(local.mlflow.url, model)
    jobs = len(queue_jobs(local.state_dir, model))

    code, out, err = promoter("--config", str(local.config), "rollback", model,
                              "--env", "production", "--to-version", third)

    assert code == 1, out + err
    assert f"version {third} of {model} was never live in production (versions the audit " \
           f"trail verified there: {first}, {second})" in err
    assert f"promoter promote {model} --version {third} --env production" in err
    assert mlflow_client(local.mlflow.url).get_registered_model(model).aliases["production"] \
        == second
    assert len(queue_jobs(local.state_dir, model)) == jobs and not open_mrs(promoter, local, model)
    code, out, _ = promoter("--config", str(local.config), "audit", "show", "--model", model,
                            "--output", "json")
    assert [e for e in json.loads(out) if e["event"].startswith("rollback")] == []


def _two_merged_versions(local: LocalStack, promoter: Cli, model: str) -> tuple[str, str]:
    first, second = (register_model_version(local.mlflow.url, model) for _ in range(2))
    client = mlflow_client(local.mlflow.url)
    for jobs, version in enumerate((first, second), start=1):
        client.set_registered_model_alias(model, "production", version)
        settle(local, model, jobs)
        [mr] = open_mrs(promoter, local, model)
        merge(promoter, local, mr["iid"])
    return first, second


def test_a_rollback_asked_again_after_its_mr_was_closed_opens_a_new_mr(
        local: LocalStack, promoter: Cli) -> None:
    """A reviewer closed the rollback's MR: production still runs version 2, the alias names
    1. Asked again, the rollback proposes 1 in a new MR (before: "moved from version 1 to 1",
    the finished job's closed MR reported as created, nothing proposed, exit 0). Once that is
    merged, rolling back to 1 again has nothing to do: refused, nothing moves."""
    model = "rollback-again-model"
    first, second = _two_merged_versions(local, promoter, model)
    config = str(local.config)
    code, out, err = promoter("--config", config, "rollback", model, "--env", "production",
                              "--output", "json")
    assert code == 0, out + err
    closed = json.loads(out)["result"]["mr_iid"]
    code, out, err = promoter("--config", config, "mr", "close", str(closed), "--user", "alice")
    assert code == 0, out + err

    code, out, err = promoter("--config", config, "rollback", model, "--env", "production")

    assert code == 0, out + err
    assert f"already names version {first}, but production runs version {second}: " \
           f"proposing version {first} again" in out
    assert "existing job" not in out and "done: created" in out
    [mr] = open_mrs(promoter, local, model)
    assert mr["iid"] != closed and f"merge request: local:!{mr['iid']}" in out
    assert local.model_version_on(mr["source_branch"], model, "production") == first
    merge(promoter, local, mr["iid"])
    jobs = len(queue_jobs(local.state_dir, model))
    code, out, err = promoter("--config", config, "rollback", model, "--env", "production",
                              "--to-version", first)
    assert code == 1 and "nothing to roll back" in err, out + err
    assert mlflow_client(local.mlflow.url).get_registered_model(model).aliases["production"] \
        == first
    assert len(queue_jobs(local.state_dir, model)) == jobs


def test_a_denied_rollback_leaves_the_alias_where_it_was(local: LocalStack, promoter: Cli) -> None:
    """Version 1 was found bad after version 2 replaced it: rolling back to it is refused
    before anything moves, so MLflow still names what production runs."""
    model = "rollback-denied-model"
    first, second = _two_merged_versions(local, promoter, model)
    client = mlflow_client(local.mlflow.url)
    client.set_model_version_tag(model, first, "validation_status", "failed")

    code, out, err = promoter("--config", str(local.config), "rollback", model,
                              "--env", "production")
    assert code == 4, out + err
    assert "denied by policy (the alias was not moved)" in out and "validation_status" in out
    assert client.get_registered_model(model).aliases["production"] == second
    assert len(queue_jobs(local.state_dir, model)) == 2     # no job for the denied version
    code, out, _ = promoter("--config", str(local.config), "audit", "show", "--model", model,
                            "--output", "json")
    assert [e for e in json.loads(out) if e["event"].startswith("rollback")] == []


def test_a_rollback_the_job_denies_puts_the_alias_back(
        local: LocalStack, promoter: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdict can change between the check and the job (here: the check is made to allow
    it): the job's denial moves the alias back to the version production still runs."""
    from promoter.core.policy import Decision
    from promoter.policy_check import PolicyCheck

    model = "rollback-reverted-model"
    first, second = _two_merged_versions(local, promoter, model)
    client = mlflow_client(local.mlflow.url)
    client.set_model_version_tag(model, first, "validation_status", "failed")
    monkeypatch.setattr("promoter.policy_check.check_policy",
                        lambda *_: PolicyCheck(Decision(())))

    code, out, err = promoter("--config", str(local.config), "rollback", model,
                              "--env", "production")
    assert code == 4, out + err
    assert f"rollback to version {first} denied; alias 'production' of {model} moved back " \
           f"to version {second}" in err
    assert client.get_registered_model(model).aliases["production"] == second
    code, out, _ = promoter("--config", str(local.config), "audit", "show", "--model", model,
                            "--output", "json")
    reverted = [e for e in json.loads(out) if e["event"] == "rollback.reverted"]
    assert [(e["version"], e["restored"]) for e in reverted] == [(first, second)]
