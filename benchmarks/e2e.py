"""End-to-end benchmark: seconds from an MLflow alias being set to the merge request being open.

Everything real, on loopback: `mlflow server` (sqlite), `docker-registry`, `promoter serve`
(subprocess, local git provider with a bare remote), the MLflow webhook registered to it. The
stack is the one `promoter demo` starts (promoter/demo/environment.py), in a fresh temporary
state directory, stopped and removed at the end.

1. cold: one model with a random weights file (100 MiB by default) and small requirements,
   promoted once on the empty state directory — the build downloads the model, installs the
   requirements into the dependency layer, compresses and pushes every layer, signs.
2. warm: one small model registered as several versions with the same files; each version is
   promoted once (not measured), then the production alias moves across the versions N times
   (100 by default). Every job finds its version's image already pushed from the same inputs
   (`find_existing`), so the time is webhook delivery + queue + registry reads + signing check
   + render + git commit/MR + write-back.

"MR open" is observed as the job reaching `done` with that version's MR in its result (the
MR exists slightly earlier; the write-back to MLflow is included). Prints p50/p99 and where
the time went (webhook delivery vs job, and the mean of each pipeline step from /metrics).
Not a test: it prints figures and judges nothing. Targets (issue 6): warm p50 <= 1 s, p99 <= 2 s.

Usage: python benchmarks/e2e.py [--promotions 100] [--versions 4] [--cold-size-mib 100]
                                [--keep]   (needs docker-registry; the cold build needs PyPI)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promoter.core.jobs import DEAD, DONE, Job  # noqa: E402
from promoter.demo import environment  # noqa: E402
from promoter.service.queue import JobQueue  # noqa: E402

ENV = "production"
WARM_MODEL = "bench-warm"
COLD_MODEL = "bench-cold"
TAGS = {"deploy.owner.team": "bench", "deploy.owner.costCenter": "cc-bench",
        "deploy.runtime": "deployment", "deploy.resources.cpu": "500m",
        "deploy.resources.memory": "1Gi", "validation_status": "passed"}
WARM_TIMEOUT = 120.0   # seconds for one warm promotion before the benchmark gives up
COLD_TIMEOUT = 1200.0
POLL = 0.005           # job-queue poll interval: small against the figures measured


@dataclass(frozen=True)
class Sample:
    version: str
    total: float      # alias set → job done with the MR
    delivery: float   # alias set → job enqueued (MLflow webhook + intake)
    outcome: str


def log_model(client: Any, tracking_uri: str, name: str, versions: int,
              weights_mib: int) -> list[str]:
    """Register ``versions`` versions of one small sklearn model (same files every time)."""
    import mlflow

    from tests.image.model import save_model

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("promoter-bench")
    with tempfile.TemporaryDirectory(prefix="bench-model-") as scratch:
        model_dir = save_model(Path(scratch) / "model")
        if weights_mib:
            with (model_dir / "weights.bin").open("wb") as handle:
                for _ in range(weights_mib):
                    handle.write(os.urandom(1 << 20))
        with warnings.catch_warnings(), mlflow.start_run(run_name=name) as run:
            warnings.simplefilter("ignore")
            mlflow.log_params({"C": 1.0})
            mlflow.log_metrics({"accuracy": 0.97})
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
    found = []
    for _ in range(versions):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
        for key, value in TAGS.items():
            client.set_model_version_tag(name, version, key, value)
        found.append(version)
    return found


def newest_job_id(queue: JobQueue) -> int:
    jobs = queue.list(limit=1)
    return jobs[0].id if jobs else 0


def promote(client: Any, queue: JobQueue, model: str, version: str, timeout: float) -> Sample:
    """Set the alias, then poll the job queue until this version's job is done."""
    after = newest_job_id(queue)
    started = time.time()
    client.set_registered_model_alias(model, ENV, version)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(queue, model, version, after)
        if job is not None and job.state == DEAD:
            raise SystemExit(f"job {job.id} for {model} v{version} is dead: {job.reason}")
        if job is not None and job.state == DONE:
            finished = time.time()
            result = job.result or {}
            if result.get("version") != version or not result.get("mr_iid"):
                raise SystemExit(f"job {job.id} finished without an MR of v{version}: {result}")
            return Sample(version, finished - started, job.created_at - started,
                          str(result.get("outcome")))
        time.sleep(POLL)
    raise SystemExit(f"no finished job for {model} v{version} after {timeout:.0f} s")


def _job(queue: JobQueue, model: str, version: str, after: int) -> Job | None:
    for job in queue.list(limit=20):
        if job.id > after and job.key.model == model and job.key.version == version \
                and job.key.env == ENV and job.key.action == "promote":
            return job
    return None


def step_sums(metrics_url: str) -> dict[str, tuple[float, float]]:
    """step → (seconds summed, count) over all outcomes, from promoter's /metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    sums: dict[str, list[float]] = {}
    pattern = re.compile(r'^promoter_job_step_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        step = re.search(r'step="([^"]*)"', match.group(2))
        entry = sums.setdefault(step.group(1) if step else "?", [0.0, 0.0])
        entry[0 if match.group(1) == "sum" else 1] += float(match.group(3))
    return {step: (total, count) for step, (total, count) in sums.items()}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def show(label: str, samples: list[Sample]) -> None:
    totals = [s.total for s in samples]
    deliveries = [s.delivery for s in samples]
    print(f"{label}: n={len(samples)}  p50={percentile(totals, 0.5):.3f} s  "
          f"p99={percentile(totals, 0.99):.3f} s  max={max(totals):.3f} s  "
          f"mean={statistics.fmean(totals):.3f} s")
    print(f"  alias set → job enqueued (MLflow webhook + intake): "
          f"p50={percentile(deliveries, 0.5):.3f} s  p99={percentile(deliveries, 0.99):.3f} s")
    jobs = [s.total - s.delivery for s in samples]
    print(f"  job enqueued → done (queue + pipeline):            "
          f"p50={percentile(jobs, 0.5):.3f} s  p99={percentile(jobs, 0.99):.3f} s")
    outcomes: dict[str, int] = {}
    for sample in samples:
        outcomes[sample.outcome] = outcomes.get(sample.outcome, 0) + 1
    print(f"  MR outcomes: {outcomes}")


def show_steps(before: dict[str, tuple[float, float]],
               after: dict[str, tuple[float, float]]) -> None:
    print("  mean seconds per pipeline step (from /metrics):")
    for step, (total, count) in after.items():
        old_total, old_count = before.get(step, (0.0, 0.0))
        if count > old_count:
            print(f"    {step:<14} {(total - old_total) / (count - old_count):.3f}  "
                  f"(n={count - old_count:.0f})")


@contextlib.contextmanager
def profiled(state: Path, out: Path | None) -> Iterator[None]:
    """py-spy attached to the serve process for the duration (when ``out`` is given)."""
    if out is None:
        yield
        return
    pid = json.loads((state / "demo" / "serve.json").read_text())["pid"]
    recorder = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw",
                                 "--rate", "200", "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach before the first promotion
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
        print(f"py-spy profile of promoter serve: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promotions", type=int, default=100)
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--cold-size-mib", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="record `promoter serve` with py-spy during the warm promotions "
                             "(collapsed stacks, for finding where the time goes)")
    args = parser.parse_args()
    if shutil.which("docker-registry") is None:
        raise SystemExit("docker-registry is not installed (make install-system)")

    from mlflow import MlflowClient

    from promoter.adapters.mlflow import MlflowRegistry
    from promoter.commands.hooks import EVENTS

    state = Path(tempfile.mkdtemp(prefix="promoter-bench-e2e-"))
    print(f"state directory: {state}")
    try:
        env = environment.start(state)
        settings = env.settings()
        secret = settings.secret("PROMOTER_MLFLOW_WEBHOOK_SECRET")
        assert secret is not None
        MlflowRegistry(env.mlflow_url).ensure_webhook(
            "promoter-bench", f"{env.serve_url}/webhooks/mlflow", EVENTS, secret.reveal())
        print(f"mlflow {env.mlflow_url}  registry {env.registry_url}  serve {env.serve_url}")
        client = MlflowClient(tracking_uri=env.mlflow_url, registry_uri=env.mlflow_url)
        queue = JobQueue.open(settings.state_dir)
        metrics_url = f"{env.serve_url}/metrics"
        try:
            [cold_version] = log_model(client, env.mlflow_url, COLD_MODEL, 1, args.cold_size_mib)
            before = step_sums(metrics_url)
            cold = promote(client, queue, COLD_MODEL, cold_version, COLD_TIMEOUT)
            show(f"cold build, {args.cold_size_mib} MiB model", [cold])
            show_steps(before, step_sums(metrics_url))

            versions = log_model(client, env.mlflow_url, WARM_MODEL, args.versions, 0)
            primed = [promote(client, queue, WARM_MODEL, v, COLD_TIMEOUT) for v in versions]
            show(f"first promotion of each warm version (same files, {len(versions)} versions)",
                 primed)
            before = step_sums(metrics_url)
            samples = []
            with profiled(state, args.py_spy):
                for index in range(args.promotions):
                    version = versions[index % len(versions)]  # the alias moves (primed: last)
                    samples.append(promote(client, queue, WARM_MODEL, version, WARM_TIMEOUT))
            show(f"warm: alias moves across cached versions ({args.promotions} promotions)",
                 samples)
            show_steps(before, step_sums(metrics_url))
        finally:
            queue.close()
    finally:
        stopped = environment.stop(state)
        print(f"stopped: {', '.join(stopped) or 'nothing'}")
        if args.keep:
            print(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
