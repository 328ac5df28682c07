"""The pieces the crash and fault tests share: a restartable registry, a small registered model,
one promoter.yaml per case, the crash runner as a subprocess, and what a case ends up with.

Each case gets its own state directory (queue, step log, local git remote) while the MLflow
server, the OCI registry and the registered model are shared, so the matrix stays fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.mlflow_server import MlflowServer, free_port, server_environment, wait_for_http
from tests.fixtures.stack import (
    GITLAB_TOKEN,
    SIGNING_DATA,
    CosignKeys,
    mlflow_client,
    promoter_environ,
    register_model_version,
    run_promoter,
    write_config,
)
from tests.pipeline_faults.launcher import RUNNER, Forked, Launcher

ROOT = Path(__file__).resolve().parents[2]
KEYS = CosignKeys(SIGNING_DATA / "real-cosign-0.key", SIGNING_DATA / "real-cosign-0.pub", "hello")
ENV = "production"


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
def register_model(tracking_uri: str, name: str, **tags: str) -> str:
    """A new version of the small model (stack.DEPLOY_TAGS plus ``tags``), with the
    production alias pointing at it; returns the version."""
    version = register_model_version(tracking_uri, name, tags=tags)
    mlflow_client(tracking_uri).set_registered_model_alias(name, ENV, version)
    return version


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
    launcher: Launcher | None = None     # fork runners from here (else start them afresh)

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
    def runner(self, job_id: int, *args: str, label: str) -> Forked | subprocess.Popen[bytes]:
        argv = ["--config", str(self.config), "--job-id", str(job_id), *args]
        env = promoter_environ(keys=KEYS, PYTHONPATH=str(ROOT), PROMOTER_CONFIG=str(self.config))
        log = self.directory / f"{label}.log"
        if self.launcher is not None:
            return self.launcher.start(argv, env, self.directory, log)
        with log.open("wb") as out:
            return subprocess.Popen([sys.executable, str(RUNNER), *argv], cwd=self.directory,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)

    def run(self, job_id: int, *args: str, label: str, timeout: float = 120) -> int:
        process = self.runner(job_id, *args, label=label)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
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
        from promoter.adapters import localgit

        return [{"iid": mr.iid, "source_branch": mr.source_branch, "title": mr.title,
                 "description": mr.description}
                for mr in localgit.from_settings(self.settings()).list_mrs("opened")]

    def commits_ahead(self, branch: str, target: str = "main") -> int:
        return int(self.git("rev-list", "--count", f"{target}..{branch}").strip())

    def commit_count(self, ref: str) -> int:
        return int(self.git("rev-list", "--count", ref).strip())

    def files(self, ref: str) -> dict[str, str]:
        names = self.git("ls-tree", "-r", "--name-only", ref).split()
        return {name: self.git("show", f"{ref}:{name}") for name in names}


def new_case(directory: Path, *, mlflow_url: str, repository: str, gitlab: Any = None,
             gitlab_wait: float = 60, image_cache: Path | None = None,
             launcher: Launcher | None = None) -> Case:
    """A fresh case directory (production only, signing on, images into ``repository``);
    ``image_cache`` (a warm state dir's) spares the dependency layer's pip download."""
    state_dir = directory / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"image": {"repository": repository}}
    if gitlab is not None:  # short timeouts: lost responses are noticed quickly
        extra["git"] = {"gitlab": {"timeout_seconds": 2, "max_retry_wait_seconds": gitlab_wait}}
    config = write_config(
        directory / "promoter.yaml", state_dir=state_dir, mlflow_url=mlflow_url, keys=KEYS,
        provider="gitlab" if gitlab else "local",
        gitlab_url=gitlab.base_url if gitlab else None, extra=extra,
        environments={ENV: {"trigger": {"alias": ENV}, "namespace": f"models-{ENV}",
                            "approvals": 1}})
    if image_cache is not None and image_cache.exists():
        shutil.copytree(image_cache, state_dir / "image-cache", dirs_exist_ok=True)
    environ = {"PROMOTER_GITLAB_TOKEN": GITLAB_TOKEN} if gitlab else {}
    return Case(directory, config, state_dir, repository, gitlab, environ, launcher)


def verify_signature(case: Case, reference: str) -> Any:
    """What `promoter image verify REF@DIGEST --key cosign.pub` checks, in-process; raises
    (UnsignedImage, SignedByOtherKey, …) unless a valid signature over this digest exists."""
    from promoter.service import composition

    return composition.cosign_verifier(case.settings(), public_key=KEYS.public).verify(reference)


def jobs_show(case: Case, job_id: int) -> subprocess.CompletedProcess[str]:
    """`promoter jobs show ID` as an operator runs it against the case's state dir."""
    return run_promoter("jobs", "show", str(job_id), env=promoter_environ(keys=KEYS),
                        config=case.config, timeout=120)
