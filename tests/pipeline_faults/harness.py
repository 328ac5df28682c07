"""The pieces the crash and fault tests share: a restartable registry, a small registered model,
one promoter.yaml per case, the crash runner as a subprocess, and what a case ends up with.

Each case gets its own state directory (queue, step log, local git remote) while the MLflow
server, the OCI registry and the registered model are shared, so the matrix stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

from tests.fixtures.mlflow_server import MlflowServer, free_port, server_environment, wait_for_http
from tests.image.model import save_model

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("crash_runner.py")
SIGNING_DATA = ROOT / "tests" / "signing" / "data"
KEY, PUBLIC_KEY, KEY_PASSWORD = (SIGNING_DATA / "real-cosign-0.key",
                                 SIGNING_DATA / "real-cosign-0.pub", "hello")
ENV = "production"
NAMESPACE = "models-production"
INTENT_TAGS = {
    "deploy.owner.team": "risk", "deploy.owner.costCenter": "cc-1",
    "deploy.runtime": "deployment", "deploy.resources.cpu": "250m",
    "deploy.resources.memory": "512Mi", "deploy.scaling.minReplicas": "1",
    "deploy.scaling.maxReplicas": "2",
}
GITLAB_TOKEN = "bot-token"
TERMINAL = ("done", "dead")


# --------------------------------------------------------------------------- registry
class Registry:
    """docker-registry on a fixed loopback port and data dir, so it can be stopped and brought
    back exactly where it was (the registry-outage test)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        binary = shutil.which("docker-registry")
        if binary is None:
            import pytest

            pytest.skip("docker-registry is not installed (make install-system installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.workdir / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: {self.address}}}\n", encoding="utf-8")
        with (self.workdir / "registry.log").open("ab") as log:
            self.process = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                            stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"http://{self.address}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("registry did not start:\n"
                           + (self.workdir / "registry.log").read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def restart_mlflow(server: MlflowServer, timeout: float = 120.0) -> MlflowServer:
    """Start ``server`` again on its port, over its sqlite file and artifact directory."""
    server.stop()
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{server.root / 'mlflow.db'}",
               "--artifacts-destination", str(server.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(server.port), "--workers", "1"]
    with server.log.open("ab") as sink:
        process = subprocess.Popen(command, cwd=server.root, env=server_environment(),
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    again = MlflowServer(url=server.url, port=server.port, root=server.root, log=server.log,
                         process=process)
    wait_for_http(f"{again.url}/health", timeout, process, server.log)
    return again


# --------------------------------------------------------------------------- model
def register_model(tracking_uri: str, name: str, workdir: Path, *,
                   tags: dict[str, str]) -> str:
    """Log the small sklearn model (tiny requirements) as a run's artifacts, register it and
    tag the version; returns the version. Logged as plain artifacts so MLflow does not add
    itself to requirements.txt (the dependency layer stays small)."""
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    model_dir = workdir / "model"
    if not model_dir.exists():
        save_model(model_dir)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    # Scoped global URI as well: some MLflow calls consult the process-wide registry URI.
    with _use_tracking_uri(tracking_uri):
        experiment = client.get_experiment_by_name("pipeline-faults")
        experiment_id = (experiment.experiment_id if experiment
                         else client.create_experiment("pipeline-faults"))
        run = client.create_run(experiment_id)
        client.log_artifacts(run.info.run_id, str(model_dir), "model")
        client.log_metric(run.info.run_id, "accuracy", 0.93)
        client.set_terminated(run.info.run_id)
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        created = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                              run_id=run.info.run_id)
        for key, value in tags.items():
            client.set_model_version_tag(name, created.version, key, value)
        client.set_registered_model_alias(name, ENV, created.version)
    return str(created.version)


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One case: its directory, config and what the runner needs in its environment."""

    directory: Path
    config: Path
    state_dir: Path
    repository: str                      # image repository, {name} filled in by promoter
    gitlab: Any = None                   # the stand-in, for GitLab cases
    environ: dict[str, str] = field(default_factory=dict)

    def settings(self) -> Any:
        from promoter.settings import load_settings

        return load_settings(self.config, environ={**os.environ, **self.environ})

    def enqueue(self, model: str, version: str) -> int:
        from promoter.core.jobs import JobKey
        from promoter.service.queue import JobQueue

        queue = JobQueue.open(self.state_dir)
        try:
            return queue.enqueue(JobKey(model, version, ENV, "promote"), {"source": "test"},
                                 source="test").job.id
        finally:
            queue.close()

    def job(self, job_id: int) -> dict[str, Any]:
        from promoter.service.queue import JobQueue

        queue = JobQueue.open(self.state_dir)
        try:
            return {**queue.get(job_id).as_dict(), "steps": queue.steps(job_id)}
        finally:
            queue.close()

    def wait_for(self, job_id: int, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job never became {what} within {timeout:.0f} s: {job}")
            time.sleep(0.2)

    # -- the runner ------------------------------------------------------------------------
    def runner(self, job_id: int, *args: str, label: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PROMOTER_", "MLFLOW_", "COSIGN_"))}
        env.update(self.environ, COSIGN_PASSWORD=KEY_PASSWORD, PYTHONPATH=str(ROOT),
                   PROMOTER_CONFIG=str(self.config))
        out = (self.directory / f"{label}.log").open("wb")
        try:
            return subprocess.Popen([sys.executable, str(RUNNER), "--config", str(self.config),
                                     "--job-id", str(job_id), *args], cwd=self.directory,
                                    env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()

    def run(self, job_id: int, *args: str, label: str, timeout: float = 120) -> int:
        process = self.runner(job_id, *args, label=label)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"runner {label} did not finish:\n{self.log(label)}") from None

    def log(self, label: str) -> str:
        path = self.directory / f"{label}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- what the case ended with ----------------------------------------------------------
    def remote(self) -> Path:
        return Path(self.gitlab.repo.path) if self.gitlab else self.state_dir / "gitops.git"

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.remote(), check=True,
                              capture_output=True, text=True, timeout=60).stdout

    def open_mrs(self) -> list[dict[str, Any]]:
        if self.gitlab is not None:
            return [{"iid": mr.iid, "source_branch": mr.source_branch, "title": mr.title,
                     "description": mr.description}
                    for mr in self.gitlab.project.mrs.values() if mr.state == "opened"]
        from promoter.service import composition

        return [{"iid": mr.iid, "source_branch": mr.source_branch, "title": mr.title,
                 "description": mr.description}
                for mr in composition.provider(self.settings()).list_mrs("opened")]

    def commits_ahead(self, branch: str, target: str = "main") -> int:
        return int(self.git("rev-list", "--count", f"{target}..{branch}").strip())

    def commit_count(self, ref: str) -> int:
        return int(self.git("rev-list", "--count", ref).strip())

    def files(self, ref: str) -> dict[str, str]:
        names = self.git("ls-tree", "-r", "--name-only", ref).split()
        return {name: self.git("show", f"{ref}:{name}") for name in names}


def write_config(directory: Path, *, mlflow_url: str, repository: str,
                 gitlab_url: str | None = None, gitlab_wait: float = 60) -> Path:
    git: dict[str, Any] = {"provider": "local", "target_branch": "main"}
    if gitlab_url:
        git = {"provider": "gitlab", "target_branch": "main",
               "gitlab": {"url": gitlab_url, "project": "group/gitops", "timeout_seconds": 2,
                          "max_retry_wait_seconds": gitlab_wait}}
    config = {
        "apiVersion": "promoter.dev/v1alpha1", "kind": "PromoterConfig",
        "state_dir": str(directory / "state"),
        "mlflow": {"tracking_uri": mlflow_url},
        "environments": {ENV: {"trigger": {"alias": ENV}, "namespace": NAMESPACE,
                               "approvals": 1}},
        "image": {"repository": repository, "signing_key": str(KEY),
                  "verification_key": str(PUBLIC_KEY)},
        "git": git,
        "policy": {"required_tags": {"validation_status": "passed"}},
    }
    path = directory / "promoter.yaml"
    with path.open("w") as handle:
        YAML(typ="safe", pure=True).dump(config, handle)
    return path


def new_case(directory: Path, *, mlflow_url: str, repository: str, gitlab: Any = None,
             gitlab_wait: float = 60, image_cache: Path | None = None) -> Case:
    """A fresh case directory; ``image_cache`` (a warm state dir's) spares a pip download."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory, mlflow_url=mlflow_url, repository=repository,
                          gitlab_url=gitlab.base_url if gitlab else None,
                          gitlab_wait=gitlab_wait)
    state_dir = directory / "state"
    state_dir.mkdir(exist_ok=True)
    if image_cache is not None and image_cache.exists():
        shutil.copytree(image_cache, state_dir / "image-cache", dirs_exist_ok=True)
    environ = {"PROMOTER_GITLAB_TOKEN": GITLAB_TOKEN} if gitlab else {}
    return Case(directory, config, state_dir, repository, gitlab, environ)


def verify_signature(reference: str) -> subprocess.CompletedProcess[str]:
    """`promoter image verify REF@DIGEST --key cosign.pub` as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTER_", "COSIGN_"))}
    return subprocess.run([sys.executable, "-m", "promoter", "image", "verify", reference,
                           "--key", str(PUBLIC_KEY), "--output", "json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def cli(case: Case, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTER_", "COSIGN_"))}
    env.update(case.environ, PROMOTER_CONFIG=str(case.config))
    return subprocess.run([sys.executable, "-m", "promoter", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def version_tags(server_url: str, model: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server_url, registry_uri=server_url)
    return dict(client.get_model_version(model, version).tags)


def read_json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue
