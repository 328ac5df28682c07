"""Replicas benchmark: intake rate and event→MR latency, 1 and 3 `promoter serve` replicas on
PostgreSQL next to 1 replica on SQLite, in one run.

Everything real, on loopback: a PostgreSQL server (initdb + pg_ctl into a temp dir, as the
tests start it), an `mlflow server` (sqlite backend) holding small registered models, and
`promoter serve` processes with the local git provider sharing one bare remote.

1. intake: `serve --workers 0 --no-reconcile` replicas; the same signed deliveries (new keys,
   re-deliveries, re-sets; benchmarks/intake.py's mix) sent at concurrency 32, connections
   spread evenly over the replicas. Prints deliveries/s and p50/p99 acknowledgement latency.
2. event→MR: replicas with one worker each (reconcile off); one alias event per model, posted
   round-robin to the replicas; the latency of an event is from its post to its job being
   done (MR open, write-back included). Prints p50/p99.

Then the ratios against 1 replica on SQLite. Figures only: nothing is judged. The machine's
other load shows in them; compare within one run.

    python benchmarks/replicas.py [--deliveries 4000] [--distinct 2400] [--events 24]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.intake import Connection, blast, deliveries, free_port, wait_ready  # noqa: E402
from promoter.service.verify import sign_mlflow  # noqa: E402

SECRET = "benchmark-secret-7f3e"  # benchmarks/intake.py signs with it
ALIAS, ENV = "bench", "bench"


@dataclass
class Setup:
    name: str
    replicas: int
    url: str | None  # PostgreSQL database, or None for SQLite


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@contextlib.contextmanager
def postgres() -> Iterator[Any]:
    from tests.fixtures.postgres import missing_reason, start_postgres

    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def replicas(setup: Setup, root: Path, *, workers: int, mlflow_url: str | None,
             remote: Path | None) -> Iterator[list[int]]:
    """``setup.replicas`` serve processes on one store; yields their ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PROMOTER_"))}
    env.update(PROMOTER_MLFLOW_WEBHOOK_SECRET=SECRET, PYTHONPATH=str(ROOT))
    processes, ports = [], []
    root.mkdir(parents=True, exist_ok=True)
    try:
        for index in range(setup.replicas):
            state = root / f"replica-{index}"
            config = write_config(root / f"promoter-{index}.yaml", state, setup.url,
                                  mlflow_url, remote)
            port = free_port()
            command = [sys.executable, "-m", "promoter", "--config", str(config), "serve",
                       "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                       "--no-reconcile"]
            processes.append(subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL))
            ports.append(port)
        for port, process in zip(ports, processes, strict=True):
            wait_ready(f"http://127.0.0.1:{port}/healthz", process, timeout=180)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def write_config(path: Path, state_dir: Path, url: str | None, mlflow_url: str | None,
                 remote: Path | None) -> Path:
    config: dict[str, Any] = {
        "state_dir": str(state_dir), "git": {"provider": "local"},
        # production: the alias the intake deliveries name (benchmarks/intake.py's mix)
        "environments": {ENV: {"trigger": {"alias": ALIAS}, "namespace": "models-bench",
                               "approvals": 1},
                         "production": {"trigger": {"alias": "production"},
                                        "namespace": "models-production"}},
        "server": {"burst_settle_seconds": 0},
        "policy": {"required_tags": {"validation_status": "passed"}},
        "image": {"demo": True},
    }
    if url:
        config["state"] = {"url": url}
    if mlflow_url:
        config["mlflow"] = {"tracking_uri": mlflow_url}
    if remote is not None:
        config["git"]["remote"] = str(remote)
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def open_queue(setup: Setup, root: Path) -> Any:
    from promoter.service.queue import JobQueue

    if setup.url is None:
        return JobQueue.open(root / "replica-0")
    from promoter.adapters.postgres_state import PostgresStateDB, StateUrl

    return JobQueue(PostgresStateDB.connect(StateUrl(setup.url)))


def intake(setup: Setup, root: Path, sends: list[tuple[bytes, dict[str, str]]],
           concurrency: int) -> dict[str, float]:
    with replicas(setup, root, workers=0, mlflow_url=None, remote=None) as ports:
        elapsed, latencies, statuses = asyncio.run(blast(ports, sends, concurrency))
    queue = open_queue(setup, root)
    jobs = sum(queue.counts_by_state().values())
    queue.close()
    return {"rate": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1000,
            "p99": percentile(latencies, 0.99) * 1000, "jobs": jobs,
            "errors": sum(n for status, n in statuses.items() if status >= 300)}


def register_models(tracking_uri: str, count: int) -> list[str]:
    from tests.fixtures.stack import mlflow_client, register_model_version

    client = mlflow_client(tracking_uri)
    names = [f"bench-replicas-{n}" for n in range(count)]
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints a link per run
        for name in names:
            version = register_model_version(tracking_uri, name)
            client.set_registered_model_alias(name, ALIAS, version)
    return names


def alias_event(model: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "timestamp": "2026-11-30T10:00:00+00:00",
                       "data": {"name": model, "alias": ALIAS, "version": "1"}}).encode()
    delivery_id, now = str(uuid.uuid4()), str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
                  "X-MLflow-Timestamp": now,
                  "X-MLflow-Signature": sign_mlflow(SECRET, delivery_id, now, body)}


def event_to_mr(setup: Setup, root: Path, mlflow_url: str, models: list[str]) -> dict[str, float]:
    from promoter.adapters.localgit_repo import LocalRepo

    seed = root / "seed"
    LocalRepo.in_state_dir(seed, None, "main", initial_files=lambda: {"README.md": "# ops\n"})
    with replicas(setup, root, workers=1, mlflow_url=mlflow_url,
                  remote=seed / "gitops.git") as ports:
        queue = open_queue(setup, root)
        posted: dict[str, float] = {}

        async def post_all() -> None:
            connections = [Connection("127.0.0.1", port) for port in ports]
            for index, model in enumerate(models):
                body, headers = alias_event(model)
                posted[model] = time.time()
                await connections[index % len(connections)].request(
                    "POST", "/webhooks/mlflow", body, headers)
                await asyncio.sleep(0.05)  # events arrive spread out, not as one burst
            for connection in connections:
                await connection.close()

        asyncio.run(post_all())
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            jobs = [job for job in queue.list(limit=1000) if job.key.model in posted]
            if len(jobs) >= len(models) and all(job.state in ("done", "dead") for job in jobs):
                break
            time.sleep(0.2)
        queue.close()
    latencies = [job.updated_at - posted[job.key.model] for job in jobs if job.state == "done"]
    return {"p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": percentile(latencies, 0.99) if latencies else float("nan"),
            "done": len(latencies), "dead": sum(1 for job in jobs if job.state == "dead")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=4_000)
    parser.add_argument("--distinct", type=int, default=2_400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--events", type=int, default=24, help="models promoted per setup")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from tests.fixtures.mlflow_server import start_mlflow_server

    sends = deliveries(args.deliveries, args.distinct)
    print(f"{len(sends)} signed deliveries ({args.distinct} distinct keys) at concurrency "
          f"{args.concurrency}; {args.events} alias events; loopback, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="promoter-bench-replicas-") as tmp, \
            postgres() as server:
        mlflow = start_mlflow_server(Path(tmp) / "mlflow")
        try:
            models = register_models(mlflow.url, args.events)
            setups = [Setup("sqlite x1", 1, None),
                      Setup("postgresql x1", 1, server.create_database()),
                      Setup("postgresql x3", 3, server.create_database())]
            results: dict[str, dict[str, Any]] = {}
            for setup in setups:
                root = Path(tmp) / setup.name.replace(" ", "-")
                root.mkdir()
                results[setup.name] = intake(setup, root / "intake", sends, args.concurrency)
                # Fresh databases for the jobs: the intake left thousands of queued ones.
                jobs_setup = Setup(setup.name, setup.replicas,
                                   server.create_database() if setup.url else None)
                results[setup.name] |= {f"mr_{key}": value for key, value in event_to_mr(
                    jobs_setup, root / "jobs", mlflow.url, models).items()}
        finally:
            mlflow.stop()
    print(f"\n{'setup':<15} {'deliveries/s':>12} {'ack p50':>9} {'ack p99':>9} {'jobs':>6} "
          f"{'event→MR p50':>13} {'p99':>7} {'done':>5}")
    for name, r in results.items():
        print(f"{name:<15} {r['rate']:12.0f} {r['p50']:7.1f}ms {r['p99']:7.1f}ms {r['jobs']:6d} "
              f"{r['mr_p50']:12.2f}s {r['mr_p99']:6.2f}s {r['mr_done']:5d}")
    base = results["sqlite x1"]
    print("\nratios against sqlite x1 (intake rate; event→MR p50, p99):")
    for name, r in results.items():
        if name != "sqlite x1":
            print(f"  {name:<15} {r['rate'] / base['rate']:5.2f}x   "
                  f"{r['mr_p50'] / base['mr_p50']:5.2f}x   {r['mr_p99'] / base['mr_p99']:5.2f}x")
    errors = {name: r["errors"] for name, r in results.items() if r["errors"]}
    if errors:
        print(f"non-2xx answers during intake: {errors}")


if __name__ == "__main__":
    main()
