"""Benchmark (prints figures; not a test): durable enqueue behind HTTP vs a bare endpoint.

    python3 tests/queue/bench_enqueue.py [--requests 10000] [--concurrency 32]

Starts uvicorn in a child process with two routes — ``/bare`` (returns 200) and ``/enqueue``
(``JobQueue.enqueue_async``, acknowledged after its group commit) — then sends the same load to
each from this process and prints deliveries/s, p50/p99 latency and the ratio. Also reports the
queue alone (no HTTP) and how many commits (fsyncs) the deliveries took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def serve(port: int, state_dir: Path) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from promoter.service.queue import JobKey, JobQueue

    queue = JobQueue.open(state_dir)

    async def bare(request: Request) -> Response:
        await request.body()
        return JSONResponse({"ok": True})

    async def enqueue(request: Request) -> Response:
        body = json.loads(await request.body())
        result = await queue.enqueue_async(
            JobKey(body["model"], body["version"], "production", "promote"), body,
            source="mlflow", delivery_id=request.headers["x-delivery-id"])
        return JSONResponse({"job": result.job.id, "created": result.created})

    async def stats(request: Request) -> Response:
        return JSONResponse({"batches": queue._writer.batches,
                             "requests": queue._writer.requests})

    app = Starlette(routes=[Route("/bare", bare, methods=["POST"]),
                            Route("/enqueue", enqueue, methods=["POST"]),
                            Route("/stats", stats)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def load(port: int, path: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    """``concurrency`` keep-alive connections speaking plain HTTP/1.1 (a client light enough
    not to be the bottleneck itself — httpx's pool is slower than the server under test)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in counter:
                # ~1 in 4 is a redelivery of an earlier delivery id (duplicate); models repeat.
                delivery = n - 1 if n % 4 == 3 else n
                body = json.dumps({"model": f"model-{delivery % 500}",
                                   "version": str(delivery // 500)}).encode()
                request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Content-Type: application/json\r\nX-Delivery-Id: d{delivery}\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*[one_connection() for _ in range(concurrency)])
    return time.perf_counter() - started, latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(name: str, elapsed: float, latencies: list[float]) -> float:
    rate = len(latencies) / elapsed
    print(f"{name:>22}: {rate:8.0f} deliveries/s   p50 {percentile(latencies, 0.5) * 1000:6.2f} ms"
          f"   p99 {percentile(latencies, 0.99) * 1000:6.2f} ms")
    return rate


async def queue_alone(state_dir: Path, total: int, concurrency: int) -> None:
    from promoter.service.queue import JobKey, JobQueue

    queue = JobQueue.open(state_dir)
    latencies: list[float] = []
    counter = iter(range(total))

    async def producer() -> None:
        for n in counter:
            started = time.perf_counter()
            await queue.enqueue_async(JobKey(f"m{n % 500}", str(n // 500), "production",
                                             "promote"), source="bench", delivery_id=f"q{n}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*[producer() for _ in range(concurrency)])
    report("queue alone (no HTTP)", time.perf_counter() - started, latencies)
    print(f"{'':>22}  {queue._writer.requests} enqueues in {queue._writer.batches} commits")
    queue.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.state_dir)
        return 0

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port),
                                   "--state-dir", str(Path(tmp) / "http")], env=env)
        try:
            import httpx

            for _ in range(200):  # bounded wait for the server to listen
                try:
                    httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            asyncio.run(load(port, "/bare", 500, args.concurrency))  # warm up
            bare_rate = report("bare endpoint", *asyncio.run(
                load(port, "/bare", args.requests, args.concurrency)))
            durable_rate = report("durable enqueue", *asyncio.run(
                load(port, "/enqueue", args.requests, args.concurrency)))
            stats = httpx.get(f"http://127.0.0.1:{port}/stats").json()
            print(f"{'':>22}  ratio {durable_rate / bare_rate:.0%} of bare; "
                  f"{stats['requests']} enqueues in {stats['batches']} commits "
                  f"(mean batch {stats['requests'] / max(1, stats['batches']):.1f})")
        finally:
            server.terminate()
            server.wait(timeout=10)
        asyncio.run(queue_alone(Path(tmp) / "alone", args.requests, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
