"""Intake benchmark: signed MLflow deliveries into `promoter serve` vs. a bare 200 endpoint.

Starts `promoter serve --workers 0 --no-reconcile` (listener only, durable SQLite queue with
group commit) and a bare Starlette-on-uvicorn endpoint that reads the body and answers 200,
each as its own process on 127.0.0.1, then sends the same 10,000 correctly signed deliveries
from this process at concurrency 32 to each. The mix: every distinct key once (new), plus
re-deliveries of the same delivery id (duplicate) and re-sets of the same alias with a new id
(covered by the existing job). Prints deliveries/s, p50/p99 acknowledgement latency, jobs
created (must equal the distinct keys) and the promoter/bare throughput ratio.

    python benchmarks/intake.py [--deliveries 10000] [--concurrency 32] [--distinct 6000]
                                [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promoter.service.verify import sign_mlflow  # noqa: E402

SECRET = "benchmark-secret-7f3e"
BARE_APP = textwrap.dedent("""
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hook(request):
        await request.body()
        return JSONResponse({"outcome": "ok"})

    async def healthz(request):
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/webhooks/mlflow", hook, methods=["POST"]),
                            Route("/healthz", healthz)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout} s")


def deliveries(total: int, distinct: int, seed: int = 7) -> list[tuple[bytes, dict[str, str]]]:
    """``distinct`` new keys; the rest half re-deliveries (same id), half re-sets (new id)."""
    rng = random.Random(seed)
    now = str(int(time.time()))
    firsts = []
    for index in range(distinct):
        body = json.dumps({"entity": "model_version_alias", "action": "created",
                           "timestamp": "2026-11-28T10:49:29.980965+00:00",
                           "data": {"name": f"bench-model-{index}", "alias": "production",
                                    "version": str(1 + index % 9)}}).encode()
        firsts.append((body, str(uuid.uuid4())))
    sends = list(firsts)
    for extra in range(total - distinct):
        body, delivery_id = firsts[rng.randrange(distinct)]
        sends.append((body, delivery_id if extra % 2 == 0 else str(uuid.uuid4())))
    rng.shuffle(sends)
    return [(body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
                    "X-MLflow-Timestamp": now,
                    "X-MLflow-Signature": sign_mlflow(SECRET, delivery_id, now, body)})
            for body, delivery_id in sends]


class Connection:
    """A minimal HTTP/1.1 keep-alive client: far less CPU per request than a full client
    library, so the figures measure the servers rather than the load generator."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def blast(ports: list[int], sends: list[tuple[bytes, dict[str, str]]],
                concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    """Send every delivery over ``concurrency`` kept-alive connections, spread evenly over
    ``ports`` (one server, or several replicas); (seconds, latencies, count per status)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    position = 0
    connections = [Connection("127.0.0.1", ports[i % len(ports)]) for i in range(concurrency)]
    for connection in connections:  # open and warm every connection first
        await connection.request("GET", "/healthz")

    async def sender(connection: Connection) -> None:
        nonlocal position
        while position < len(sends):
            body, headers = sends[position]
            position += 1
            started = time.perf_counter()
            status, _ = await connection.request("POST", "/webhooks/mlflow", body, headers)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(sender(connection) for connection in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return elapsed, latencies, statuses


def report(name: str, elapsed: float, latencies: list[float], statuses: dict[int, int]) -> float:
    ordered = sorted(latencies)
    rate = len(latencies) / elapsed
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(f"{name:<10} {rate:9.0f} deliveries/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
          f"statuses {dict(sorted(statuses.items()))}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--distinct", type=int, default=6_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternate between the two targets this many times")
    args = parser.parse_args()
    sends = deliveries(args.deliveries, args.distinct)
    with tempfile.TemporaryDirectory(prefix="promoter-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PROMOTER_"))}
        env.update(PROMOTER_STATE_DIR=tmp, PROMOTER_MLFLOW_WEBHOOK_SECRET=SECRET,
                   PYTHONPATH=str(ROOT))
        bare_port, promoter_port = free_port(), free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(bare_port)], env=env)
        promoter = subprocess.Popen(
            [sys.executable, "-m", "promoter", "serve", "--host", "127.0.0.1", "--port",
             str(promoter_port), "--workers", "0", "--no-reconcile"],
            env=env, stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"http://127.0.0.1:{bare_port}/healthz", bare)
            wait_ready(f"http://127.0.0.1:{promoter_port}/healthz", promoter)
            print(f"{len(sends)} signed deliveries, {args.distinct} distinct keys, "
                  f"concurrency {args.concurrency}, loopback, {os.cpu_count()} CPUs")
            # Interleaved rounds, so a change in background load hits both targets alike.
            totals = {name: (0.0, [], {}) for name in ("bare 200", "promoter")}
            size = -(-len(sends) // args.rounds)
            for start in range(0, len(sends), size):
                chunk = sends[start:start + size]
                for name, port in (("bare 200", bare_port), ("promoter", promoter_port)):
                    elapsed, latencies, statuses = asyncio.run(
                        blast([port], chunk, args.concurrency))
                    total, all_latencies, all_statuses = totals[name]
                    all_latencies.extend(latencies)
                    for status, count in statuses.items():
                        all_statuses[status] = all_statuses.get(status, 0) + count
                    totals[name] = (total + elapsed, all_latencies, all_statuses)
            bare_rate = report("bare 200", *totals["bare 200"])
            promoter_rate = report("promoter", *totals["promoter"])
        finally:
            for process in (bare, promoter):
                process.terminate()
                process.wait(30)
        from promoter.service.queue import JobQueue

        queue = JobQueue.open(Path(tmp))
        jobs = sum(queue.counts_by_state().values())
        queue.close()
    verdict = "OK" if jobs == args.distinct else "MISMATCH"
    print(f"jobs created: {jobs} (distinct keys: {args.distinct}) {verdict}")
    print(f"throughput ratio promoter/bare: {promoter_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
