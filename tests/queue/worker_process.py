"""A real worker process for the queue tests (run as a script, not collected by pytest).

Modes (the handler each one runs):
  count   append "start <id> <model> <env>" / "end <id> <model> <env>" to --log; done
  block   append "start <id>", then wait for a file that never appears (the test SIGKILLs us)
  crash-after-step   record step "prepare", log it, then SIGKILL ourselves before completing
  resume  log "prepare-skipped"/"prepare-ran" depending on ctx.step("prepare"); then done
  produce (no worker) enqueue_async 32 deliveries at a time, logging "acked <delivery id>"
          as each is acknowledged, until killed (or --deadline)
The process exits once no unfinished job is left (or --deadline seconds passed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from promoter.core.jobs import Job, JobKey
from promoter.service.job_context import JobContext
from promoter.service.queue import JobQueue
from promoter.service.worker import Worker


def append(log: Path, *words: object) -> None:
    # O_APPEND writes of one short line are atomic across processes.
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(w) for w in words) + "\n").encode())
    finally:
        os.close(fd)


def make_handler(mode: str, log: Path) -> Any:
    def count(job: Job, ctx: JobContext) -> dict[str, Any]:
        append(log, "start", job.id, job.key.model, job.key.env)
        time.sleep(0.02)  # longer than a claim commit, so an overlap would show
        append(log, "end", job.id, job.key.model, job.key.env)
        return {"pid": os.getpid()}

    def block(job: Job, ctx: JobContext) -> dict[str, Any]:
        append(log, "start", job.id, os.getpid())
        never = log.with_suffix(".never")
        for _ in range(600):  # bounded: the test kills us long before
            if never.exists():
                break
            time.sleep(0.1)
        return {"blocked": True}

    def crash_after_step(job: Job, ctx: JobContext) -> dict[str, Any]:
        ctx.record_step("prepare", {"artifact": f"built-by-{os.getpid()}"})
        append(log, "prepare-ran", job.id)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    def resume(job: Job, ctx: JobContext) -> dict[str, Any]:
        earlier = ctx.step("prepare")
        if earlier is None:
            ctx.record_step("prepare", {"artifact": f"built-by-{os.getpid()}"})
            append(log, "prepare-ran", job.id)
        else:
            append(log, "prepare-skipped", job.id, earlier["artifact"])
        append(log, "finish", job.id)
        return {"artifact": (ctx.step("prepare") or {})["artifact"]}

    return {"count": count, "block": block, "crash-after-step": crash_after_step,
            "resume": resume}[mode]


async def produce(queue: JobQueue, log: Path, stop_at: float) -> None:
    async def one(n: int) -> None:
        await queue.enqueue_async(JobKey(f"model-{n % 50}", str(n), "production", "promote"),
                                  source="mlflow", delivery_id=f"d-{n}")
        append(log, "acked", f"d-{n}")

    n = 0
    while time.monotonic() < stop_at:
        await asyncio.gather(*[one(n + i) for i in range(32)])
        n += 32


def open_queue(state_dir: Path, url: str | None) -> JobQueue:
    if url is None:
        return JobQueue.open(state_dir)
    from promoter.adapters.postgres_state import PostgresStateDB, StateUrl

    return JobQueue(PostgresStateDB.connect(StateUrl(url), state_dir=state_dir))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--state-url", default=None, help="PostgreSQL instead of SQLite")
    parser.add_argument("--mode", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--start-when", type=Path, default=None,
                        help="log 'ready', then wait for this file (lines workers up)")
    args = parser.parse_args()
    if args.start_when is not None:
        append(args.log.with_suffix(".ready"), "ready", os.getpid())
        for _ in range(60_000):  # bounded: at most a minute
            if args.start_when.exists():
                break
            time.sleep(0.001)

    queue = open_queue(args.state_dir, args.state_url)
    if args.mode == "produce":
        asyncio.run(produce(queue, args.log, time.monotonic() + args.deadline))
        return 0
    handler = make_handler(args.mode, args.log)
    stop_at = time.monotonic() + args.deadline

    def loop(index: int) -> None:
        worker = Worker(queue, handler, worker_id=f"{os.getpid()}-{index}",
                        lease_seconds=args.lease, poll_seconds=0.01)
        while time.monotonic() < stop_at:
            if worker.run_once():
                continue
            counts = queue.counts_by_state()
            if counts["queued"] + counts["running"] + counts["retrying"] == 0:
                return
            time.sleep(0.005)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
