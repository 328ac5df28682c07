"""The product's main path with real processes: MLflow alias → MLflow webhook → `promoter serve`
→ signed image in a real registry → merge request in the GitLab stand-in → approve + merge →
GitLab's Merge Request Hook → MLflow shows the version as merged for production."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import requires_kubectl
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.stack import (
    CosignKeys,
    ServeProcess,
    all_settled,
    make_standin,
    mlflow_client,
    mlflow_webhook,
    promoter_environ,
    queue_jobs,
    register_model_version,
    run_promoter,
    start_serve,
    version_tags,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e
PINNED = re.compile(r"image:\s*['\"]?(\S+@sha256:[0-9a-f]{64})")


@dataclass
class GitLabStack:
    mlflow: MlflowServer
    standin: Any
    serve: ServeProcess
    state_dir: Path
    keys: CosignKeys
    root: Path


@pytest.fixture(scope="module")
def stack(mlflow_server: MlflowServer, stack_registry: str, cosign_keys: CosignKeys,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabStack]:
    """One serve (GitLab provider, real registry, signing key) for the module's tests."""
    root = tmp_path_factory.mktemp("gitlab-stack")
    standin = make_standin(root / "standin")
    config = write_config(root / "promoter.yaml", state_dir=root / "state",
                          mlflow_url=mlflow_server.url, registry=stack_registry,
                          keys=cosign_keys, provider="gitlab", gitlab_url=standin.base_url)
    # Four workers share one set of adapters: the race below must end as it does with one.
    serve = start_serve(config, promoter_environ(keys=cosign_keys), root / "serve.log",
                        workers=4)
    standin.hook_url = f"{serve.url}/webhooks/gitlab"
    try:
        yield GitLabStack(mlflow_server, standin, serve, root / "state", cosign_keys, root)
    finally:
        serve.stop()
        standin.stop()


def open_mrs(standin: Any, name: str) -> list[Any]:
    return [mr for mr in standin.project.mrs.values()
            if mr.state == "opened" and name in mr.source_branch]


def mr_or_dead_job(stack: GitLabStack, model: str) -> Any:
    """The model's open MR; fails at once when its job died instead of waiting it out."""
    dead = [job for job in queue_jobs(stack.state_dir, model) if job.state == "dead"]
    assert not dead, f"job {dead[0].id} died: {dead[0].reason}"
    return next(iter(open_mrs(stack.standin, model)), None)


def as_alice(standin: Any) -> Any:
    import gitlab

    return gitlab.Gitlab(standin.base_url, private_token="alice-token",
                         timeout=10).projects.get("group/gitops", lazy=True)


@requires_kubectl
def test_alias_to_merged_mr_with_a_signed_image(stack: GitLabStack, tmp_path: Path) -> None:
    model, url = "e2e-fraud", stack.mlflow.url
    version = register_model_version(url, model)
    with mlflow_webhook(url, f"{stack.serve.url}/webhooks/mlflow"):
        mlflow_client(url).set_registered_model_alias(model, "production", version)
        mr = wait_for(lambda: mr_or_dead_job(stack, model), 240,
                      "the merge request in the GitLab stand-in", log=stack.serve.log)
    assert f"version {version}" in mr.title
    # The job has written every tag once it is done (the MR exists a moment earlier).
    wait_for(lambda: all_settled(queue_jobs(stack.state_dir, model)), 30, "the job to finish")
    tags = version_tags(url, model, version)
    assert tags["promoter.production.status"] == "mr_opened"
    assert tags["promoter.production.mr_url"].endswith(f"/merge_requests/{mr.iid}")
    image = tags["promoter.production.image"]
    assert "@sha256:" in image

    project = as_alice(stack.standin)
    project.mergerequests.get(mr.iid, lazy=True).approve()
    project.manager.gitlab.http_put(f"/projects/42/merge_requests/{mr.iid}/merge")
    assert mr.state == "merged"
    delivery = stack.standin.deliveries[-1]
    assert delivery.event == "Merge Request Hook" and delivery.status == 200, delivery
    wait_for(lambda: version_tags(url, model, version).get("promoter.production.status")
             == "merged", 30, "MLflow tag promoter.production.status=merged",
             log=stack.serve.log)

    tree = tmp_path / "merged"
    stack.standin.repo.checkout_to("main", tree)
    validated = run_promoter("validate", str(tree / "manifests"), env=stack.serve.env)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "ok" in validated.stdout and "production" in validated.stdout
    manifests = "\n".join(path.read_text() for path in (tree / "manifests").rglob("*.yaml"))
    pinned = set(PINNED.findall(manifests))
    assert pinned == {image}, manifests
    verified = run_promoter("image", "verify", image, "--key", str(stack.keys.public),
                            env=stack.serve.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The same key cannot be passed off: another public key does not verify the digest.
    other = stack.keys.public.with_name("real-cosign-1.pub")
    refused = run_promoter("image", "verify", image, "--key", str(other), env=stack.serve.env)
    assert refused.returncode != 0
    assert [job.state for job in queue_jobs(stack.state_dir, model)] == ["done"]


def test_rollback_opens_the_mr_of_the_previous_version_on_gitlab(stack: GitLabStack) -> None:
    """`promoter rollback` moves the alias back to the version live before the current one (from
    the audit trail the GitLab merge hooks wrote) and the pipeline proposes it on GitLab."""
    import json

    model, url = "e2e-rollback", stack.mlflow.url
    first, second = (register_model_version(url, model) for _ in range(2))
    project = as_alice(stack.standin)
    with mlflow_webhook(url, f"{stack.serve.url}/webhooks/mlflow"):
        for version in (first, second):
            mlflow_client(url).set_registered_model_alias(model, "production", version)
            mr = wait_for(lambda v=version: next(
                (m for m in open_mrs(stack.standin, model) if f"version {v}" in m.title),
                None), 240, f"the MR of version {version}", log=stack.serve.log)
            wait_for(lambda: all_settled(queue_jobs(stack.state_dir, model)), 60, "the job")
            project.mergerequests.get(mr.iid, lazy=True).approve()
            project.manager.gitlab.http_put(f"/projects/42/merge_requests/{mr.iid}/merge")
            wait_for(lambda v=version: version_tags(url, model, v).get(
                "promoter.production.status") == "merged", 30, "merged in MLflow",
                log=stack.serve.log)
        rolled = run_promoter("rollback", model, "--env", "production", "--output", "json",
                              env=stack.serve.env, config=stack.root / "promoter.yaml")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    job = json.loads(rolled.stdout)
    assert job["state"] == "done" and job["result"]["version"] == first
    [mr] = open_mrs(stack.standin, model)
    assert f"version {first}" in mr.title and mr.iid == job["result"]["mr_iid"]
    assert mlflow_client(url).get_registered_model(model).aliases["production"] == first
    overlay = stack.standin.repo.git(
        "show", f"{mr.source_branch}:manifests/{model}/overlays/production/kustomization.yaml")
    assert f'promoter.dev/model-version: "{first}"' in overlay


# ----------------------------------------------------------------------------- races

class Capture:
    """Plays the network between MLflow and promoter: records every delivery MLflow makes."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with capture.lock:
                    capture.deliveries.append(({k.lower(): v for k, v in self.headers.items()},
                                               body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/mlflow"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alias_events(self) -> int:
        """Deliveries of alias moves (the rest are the tag writes promoter itself makes)."""
        import json

        with self.lock:
            bodies = [json.loads(body) for _, body in self.deliveries]
        return sum(1 for body in bodies if "alias" in body.get("data", {}))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


FORWARDED = ("x-mlflow-delivery-id", "x-mlflow-timestamp", "x-mlflow-signature",
             "content-type")


def post(serve: ServeProcess, headers: dict[str, str], body: bytes) -> int:
    import httpx

    answer = httpx.post(f"{serve.url}/webhooks/mlflow", content=body, timeout=30,
                        headers={k: v for k, v in headers.items() if k in FORWARDED})
    return answer.status_code


def resigned(headers: dict[str, str], body: bytes) -> dict[str, str]:
    """The same event under a new delivery id, signed as MLflow signs (a sender that retries
    with fresh ids, or a second webhook): intake cannot dedupe it, only the queue can."""
    import time
    import uuid

    from promoter.service.verify import sign_mlflow
    from tests.fixtures.stack import WEBHOOK_SECRET

    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return {**headers, "x-mlflow-delivery-id": delivery, "x-mlflow-timestamp": stamp,
            "x-mlflow-signature": sign_mlflow(WEBHOOK_SECRET, delivery, stamp, body)}


def shuffled_with_duplicates(batch: list[tuple[dict[str, str], bytes]],
                             rng: Any) -> list[tuple[dict[str, str], bytes]]:
    copies = [*batch, *rng.sample(batch, k=len(batch) // 2),
              *[(resigned(h, b), b) for h, b in rng.sample(batch, k=len(batch) // 3)]]
    rng.shuffle(copies)
    return copies


def test_fifty_alias_moves_delivered_shuffled_and_duplicated_end_in_one_mr(
        stack: GitLabStack) -> None:
    import random
    import threading
    from concurrent.futures import ThreadPoolExecutor

    model, url, rng = "race-model", stack.mlflow.url, random.Random(50)
    versions = [register_model_version(url, model) for _ in range(3)]
    moves = [versions[0]]
    while len(moves) < 49:
        moves.append(rng.choice([v for v in versions if v != moves[-1]]))
    moves.append(next(v for v in versions[:2] if v != moves[-1]))  # last is not the newest
    final = moves[-1]
    commits_before = stack.standin.commits_created
    capture = Capture()
    statuses: list[int] = []
    done_moving = threading.Event()

    def forward_while_moving() -> None:
        """Deliver what has been captured so far, in three batches, shuffled and
        duplicated, while the alias keeps moving: jobs resolve the alias mid-moves."""
        sent = 0
        with ThreadPoolExecutor(8) as pool:  # a batch lands at once, as a burst would
            while not (done_moving.is_set() and sent >= len(capture.deliveries)):
                with capture.lock:
                    batch = capture.deliveries[sent:]
                if len(batch) >= 17 or (batch and done_moving.is_set()):
                    sent += len(batch)
                    statuses.extend(pool.map(lambda d: post(stack.serve, *d),
                                             shuffled_with_duplicates(batch, rng)))
                else:
                    done_moving.wait(0.05)

    forwarder = threading.Thread(target=forward_while_moving, daemon=True)
    try:
        with mlflow_webhook(url, capture.url):
            forwarder.start()
            client = mlflow_client(url)
            for version in moves:
                client.set_registered_model_alias(model, "production", version)
            wait_for(lambda: capture.alias_events() >= len(moves), 60,
                     f"MLflow to deliver {len(moves)} alias events")
            done_moving.set()
            forwarder.join(120)
        # Once more, everything, in another order: late and repeated deliveries.
        with ThreadPoolExecutor(4) as pool:
            statuses.extend(pool.map(lambda d: post(stack.serve, *d),
                                     shuffled_with_duplicates(capture.deliveries, rng)))
    finally:
        done_moving.set()
        capture.stop()
    assert not forwarder.is_alive()
    assert capture.alias_events() == len(moves)  # MLflow sent one event per move
    assert set(statuses) <= {200, 202}, statuses

    def settled_jobs() -> list[Any] | None:
        found = queue_jobs(stack.state_dir, model)
        return found if all_settled(found) else None

    jobs = wait_for(settled_jobs, 180, "every job of the race to settle", log=stack.serve.log)
    assert {job.state for job in jobs} == {"done"}, [(j.id, j.state, j.reason) for j in jobs]
    mine = [mr for mr in stack.standin.project.mrs.values() if model in mr.source_branch]
    assert len(mine) == 1 and mine[0].state == "opened", [(m.iid, m.state) for m in mine]
    mr = mine[0]
    assert f"version {final}" in mr.title
    tags = version_tags(url, model, final)
    assert tags["promoter.production.status"] == "mr_opened"
    assert tags["promoter.production.mr_url"].endswith(f"/merge_requests/{mr.iid}")
    branch = stack.standin.repo
    assert branch.count(f"main..{mr.source_branch}") == 1  # one commit for the change
    files = branch.git("grep", "-h", "@sha256:", mr.source_branch, "--", f"manifests/{model}")
    assert set(PINNED.findall(files)) == {tags["promoter.production.image"]}
    overlay = branch.git("show", f"{mr.source_branch}:manifests/{model}/overlays/production/"
                         "kustomization.yaml")
    assert f'promoter.dev/model-version: "{final}"' in overlay

    # Every commit made was a change: no two commits in a row for the same version, and
    # the stand-in made exactly the commits the jobs report.
    committed = [job.result["version"] for job in sorted(jobs, key=lambda j: j.updated_at)
                 if job.result.get("commit_created")]
    assert committed and committed[-1] == final
    assert all(a != b for a, b in itertools.pairwise(committed)), committed
    assert stack.standin.commits_created - commits_before == len(committed)

    # Replays after convergence change nothing.
    head, made = branch.head(mr.source_branch), stack.standin.commits_created
    for headers, body in rng.sample(capture.deliveries, k=5):
        assert post(stack.serve, resigned(headers, body), body) in (200, 202)
    wait_for(lambda: all_settled(queue_jobs(stack.state_dir, model)), 60, "replayed jobs")
    assert branch.head(mr.source_branch) == head and stack.standin.commits_created == made
    assert len([m for m in stack.standin.project.mrs.values() if model in m.source_branch]) == 1
