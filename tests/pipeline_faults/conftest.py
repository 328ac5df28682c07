"""Shared across the crash matrix and the fault tests: one MLflow server (the session's), one
OCI registry, one registered model, and a crash-free reference run every case is compared to."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import make_standin
from tests.pipeline_faults.harness import ENV, Case, Registry, new_case, register_model
from tests.pipeline_faults.launcher import Launcher

MODEL = "Crash Test Model"


@dataclass(frozen=True)
class Stack:
    mlflow: MlflowServer
    registry: str
    model: str
    version: str
    root: Path
    warm_cache: Path                     # a state dir's image-cache with the dependency layer
    launcher: Launcher

    def repository(self, prefix: str = "faults") -> str:
        return f"{self.registry}/{prefix}/{{name}}"

    def case(self, name: str, *, prefix: str = "faults", **options: Any) -> Case:
        options.setdefault("mlflow_url", self.mlflow.url)
        return new_case(self.root / name, repository=self.repository(prefix),
                        image_cache=self.warm_cache, launcher=self.launcher, **options)


@dataclass(frozen=True)
class Reference:
    """What a crash-free run produced: the end state every crashed run must reach."""

    case: Case
    job: dict[str, Any]
    files: dict[str, str]
    branch: str
    main_commits: int


@pytest.fixture(scope="session")
def registry_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    registry = Registry(tmp_path_factory.mktemp("faults-registry")).start()
    try:
        yield registry
    finally:
        with contextlib.suppress(Exception):
            registry.stop()


@pytest.fixture(scope="session")
def launcher() -> Iterator[Launcher]:
    started = Launcher()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def stack(mlflow_server: MlflowServer, registry_service: Registry, launcher: Launcher,
          tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("pipeline-faults")
    version = register_model(mlflow_server.url, MODEL)
    return Stack(mlflow_server, registry_service.address, MODEL, version, root,
                 root / "reference" / "state" / "image-cache", launcher)


@pytest.fixture(scope="session")
def reference(stack: Stack) -> Reference:
    case = stack.case("reference")
    job_id = case.enqueue(stack.model, stack.version)
    code = case.run(job_id, label="run")
    job = case.job(job_id)
    assert code == 0 and job["state"] == "done", case.log("run")
    assert job["attempts"] == 1 and job["result"]["outcome"] == "created", job
    [mr] = case.open_mrs()
    assert mr["source_branch"].startswith("promote/"), mr
    assert case.commits_ahead(mr["source_branch"]) == 1
    assert any(path.endswith(f"overlays/{ENV}/kustomization.yaml")
               for path in case.files(mr["source_branch"]))
    return Reference(case, job, case.files(mr["source_branch"]), mr["source_branch"],
                     case.commit_count("main"))


@dataclass(frozen=True)
class GitLabReference:
    """A fault-free run against the GitLab stand-in: what every GitLab fault run must equal."""

    job: dict[str, Any]
    mr: dict[str, Any]
    files: dict[str, str]
    requests: list[tuple[str, str]]


@pytest.fixture(scope="session")
def gitlab_reference(stack: Stack, reference: Reference,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabReference]:
    standin = make_standin(tmp_path_factory.mktemp("gitlab-reference"))
    try:
        case = stack.case("gitlab-reference", gitlab=standin)
        job_id = case.enqueue(stack.model, stack.version)
        assert case.run(job_id, label="run") == 0, case.log("run")
        job = case.job(job_id)
        assert job["state"] == "done" and job["attempts"] == 1, case.log("run")
        [mr] = case.open_mrs()
        assert mr["source_branch"] == reference.branch and standin.commits_created == 1
        yield GitLabReference(job, mr, case.files(mr["source_branch"]), list(standin.requests))
    finally:
        standin.stop()
