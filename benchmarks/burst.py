"""Burst benchmark: an MLflow alias moved 50 times in a few seconds; how soon does the merge
request show the final version, and how many pipeline runs did it take?

Everything real, on loopback (the stack `promoter demo` starts: `mlflow server`,
`docker-registry`, `promoter serve` with the local git provider, the MLflow webhook). One small
model is registered as several versions with the same files and each version is promoted once
first (so every image exists and a pipeline run is the warm path). Then:

1. baseline: one alias move on a quiet deployment, alias set → MR showing that version;
2. burst: ``--moves`` alias moves spread over ``--seconds``, ending on a version other than the
   one live; measured from the last move to the MR showing the final version, and the pipeline
   runs the burst caused (jobs that ran, from the job queue).

Prints the figures and the ratio burst/baseline. Not a test: it judges nothing. Targets (the
hardening issue): ≤ 2 s after the last move, ≤ 3 pipeline runs.

Usage: python benchmarks/burst.py [--moves 50] [--seconds 5] [--versions 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.e2e import ENV, WARM_TIMEOUT, log_model, promote  # noqa: E402
from promoter.core.naming import derive_name  # noqa: E402
from promoter.demo import environment  # noqa: E402
from promoter.service.queue import JobQueue  # noqa: E402

MODEL = "bench-burst"
POLL = 0.01


def mr_version(provider: Any, name: str) -> str | None:
    found = provider.find(name, ENV)
    return found.version if found is not None and found.state in ("opened", "merged") else None


def wait_for_mr(provider: Any, name: str, version: str, timeout: float = WARM_TIMEOUT) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mr_version(provider, name) == version:
            return time.time()
        time.sleep(POLL)
    raise SystemExit(f"the MR of {name} did not show version {version} within {timeout:.0f} s")


def burst(client: Any, queue: JobQueue, provider: Any, versions: list[str], moves: int,
          seconds: float, rng: random.Random) -> tuple[float, int, str]:
    """→ (seconds from the last move to the MR at the final version, pipeline runs, final)."""
    live = mr_version(provider, derive_name(MODEL))
    final = rng.choice([v for v in versions if v != live])
    sequence = [rng.choice(versions) for _ in range(moves - 1)] + [final]
    before = max((job.id for job in queue.list(limit=1)), default=0)
    gap = seconds / max(1, moves - 1)
    for version in sequence:
        client.set_registered_model_alias(MODEL, ENV, version)
        time.sleep(gap)
    last_move = time.time() - gap
    done = wait_for_mr(provider, derive_name(MODEL), final)
    time.sleep(2.0)  # let anything still queued run, so it is counted
    runs = sum(1 for job in queue.list(limit=500)
               if job.id > before and job.key.model == MODEL and job.attempts > 0)
    return done - last_move, runs, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("docker-registry") is None:
        raise SystemExit("docker-registry is not installed (make install-system)")

    from mlflow import MlflowClient

    from promoter.commands.hooks import EVENTS
    from promoter.service import composition

    state = Path(tempfile.mkdtemp(prefix="promoter-bench-burst-"))
    rng = random.Random(7)
    try:
        env = environment.start(state)
        settings = env.settings()
        secret = settings.secret("PROMOTER_MLFLOW_WEBHOOK_SECRET")
        assert secret is not None
        composition.webhooks(settings).ensure_webhook(
            "promoter-bench", f"{env.serve_url}/webhooks/mlflow", EVENTS, secret.reveal())
        client = MlflowClient(tracking_uri=env.mlflow_url, registry_uri=env.mlflow_url)
        queue = JobQueue.open(settings.state_dir)
        provider = composition.provider(settings)
        try:
            versions = log_model(client, env.mlflow_url, MODEL, args.versions, 0)
            for version in versions:   # every image exists: runs are the warm path
                promote(client, queue, MODEL, version, WARM_TIMEOUT)
            print(f"{MODEL}: versions {', '.join(versions)} primed; "
                  f"server.burst_settle_seconds={settings.server.burst_settle_seconds}")
            for round_ in range(1, args.rounds + 1):
                live = mr_version(provider, derive_name(MODEL))
                single = rng.choice([v for v in versions if v != live])
                started = time.time()
                client.set_registered_model_alias(MODEL, ENV, single)
                baseline = wait_for_mr(provider, derive_name(MODEL), single) - started
                seconds, runs, final = burst(client, queue, provider, versions, args.moves,
                                             args.seconds, rng)
                print(f"round {round_}: baseline one move → MR {baseline:.2f} s; burst of "
                      f"{args.moves} moves over {args.seconds:.0f} s → MR at v{final} "
                      f"{seconds:.2f} s after the last move ({seconds / baseline:.2f}x the "
                      f"baseline), {runs} pipeline runs (targets: ≤ 2 s, ≤ 3 runs)")
        finally:
            queue.close()
    finally:
        environment.stop(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
