"""One worker process running the REAL job handler on a case's state dir (a script, not a test).

    python tests/pipeline_faults/crash_runner.py --config promoter.yaml --job-id N
        [--kill-after STEP] [--kill-mid-upload] [--lease 2] [--backoff-base 0.2 --backoff-cap 1]
        [--workers 4]

It builds the handler with ``build_job_handler(settings, registry, progress=...)`` and a real
``Worker`` on the state dir, then works the queue until job N is done or dead (or --deadline).

--kill-after STEP   the progress callback SIGKILLs this process right after the pipeline reports
                    STEP (resolve, policy, image, sign, render, merge request, write-back).
--kill-mid-upload   uploads use small PATCH chunks; once the first chunk of a blob that needs
                    several has been sent, the process SIGKILLs itself. Patched here, in this
                    process only: production code carries no test hooks.

Before killing itself the runner prints ``KILLED <what>`` so the test knows the crash really
happened where it asked.     python tests/pipeline_faults/crash_runner.py --serve-forks

imports all of that once, then forks one runner per JSON request on stdin
({"argv": [...], "env": {...}, "cwd": DIR, "log": FILE}) and answers {"pid": N} at once and
{"pid": N, "returncode": RC} when it ends. Each runner is still its own process that the
test may SIGKILL; the fork only spares the ~4 s of imports per start, which add up over the
crash matrix (two starts per case).

Each failed attempt that will be retried prints ``RETRYING attempt N: <reason>``; the final
job is printed as one JSON line: ``JOB {...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

UPLOAD_CHUNK_BYTES = 2048


def die(what: str) -> None:
    print(f"KILLED {what}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def progress_killer(kill_after: str | None) -> Any:
    def progress(step: str, outcome: str, detail: str = "") -> None:
        print(f"STEP {step} {outcome} {detail}", flush=True)
        if step == kill_after:
            die(f"after {step}")

    return progress


def kill_in_the_middle_of_uploads() -> None:
    """Small chunks, and a SIGKILL after the first PATCH of a blob that needs several."""
    from promoter.adapters import oci, oci_upload

    original_init = oci.RegistryClient.__init__
    original_upload = oci_upload._upload_once
    original_request = oci.RegistryClient.request

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.chunk_size = UPLOAD_CHUNK_BYTES
        self.kill_after_patch = None

    def upload_once(client: Any, repository: str, pieces: Any) -> int:
        blob = pieces.blob  # the upload session's view of the blob (oci_upload._Pieces)
        if blob.size > 2 * client.chunk_size:
            client.kill_after_patch = f"mid-upload of {blob.digest} ({blob.size} bytes)"
        try:
            return original_upload(client, repository, pieces)
        finally:
            client.kill_after_patch = None

    def request(self: Any, method: str, url: str, **kwargs: Any) -> Any:
        response = original_request(self, method, url, **kwargs)
        if method == "PATCH" and getattr(self, "kill_after_patch", None):
            die(f"{self.kill_after_patch} after chunk {kwargs['headers']['Content-Range']}")
        return response

    oci.RegistryClient.__init__ = init  # type: ignore[method-assign]
    oci.RegistryClient.request = request  # type: ignore[method-assign]
    oci_upload._upload_once = upload_once


def serve_forks() -> int:
    """Import once, then fork a runner per request line (see the module docstring)."""
    import traceback

    # Everything a runner imports, so a forked child starts at once. No thread runs yet
    # (fork-safe): the children create every client, connection and thread themselves.
    import mlflow.artifacts  # noqa: F401

    import promoter.adapters.gitlab_provider
    import promoter.adapters.localgit
    import promoter.adapters.mlflow
    import promoter.adapters.oci
    import promoter.image.service
    import promoter.service.composition
    import promoter.service.jobs_handler
    import promoter.service.queue
    import promoter.service.worker
    import promoter.signing.service  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the runner
            code = 3
            try:
                os.chdir(request["cwd"])
                os.environ.clear()
                os.environ.update(request["env"])
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                code = main(request["argv"])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}),
              flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--kill-after", default=None)
    parser.add_argument("--kill-mid-upload", action="store_true")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--backoff-base", type=float, default=0.2)
    parser.add_argument("--backoff-cap", type=float, default=1.0)
    parser.add_argument("--max-attempts", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from promoter.core.jobs import TERMINAL_STATES, Backoff
    from promoter.service import composition
    from promoter.service.jobs_handler import build_job_handler
    from promoter.service.queue import JobQueue
    from promoter.service.worker import Worker
    from promoter.settings import load_settings

    if args.kill_mid_upload:
        kill_in_the_middle_of_uploads()
    settings = load_settings(args.config, environ=dict(os.environ))
    handler = build_job_handler(settings, composition.registry(settings),
                                progress=progress_killer(args.kill_after))
    queue = JobQueue.open(settings.state_dir)
    # --workers N threads share the queue and the one handler (its adapters built once), as
    # `serve --workers N` does: the end state must not depend on how many there are.
    workers = [Worker(queue, handler, worker_id=f"crash-runner-{os.getpid()}-{index}",
                      lease_seconds=args.lease, max_attempts=args.max_attempts,
                      backoff=Backoff(args.backoff_base, args.backoff_cap), poll_seconds=0.1)
               for index in range(args.workers)]
    stop_at = time.monotonic() + args.deadline

    def work(worker: Worker) -> None:
        while (queue.get(args.job_id).state not in TERMINAL_STATES
               and time.monotonic() < stop_at):
            if not worker.run_once():
                time.sleep(0.1)  # the lease of a killed worker has not expired yet, or backoff

    threads = [threading.Thread(target=work, args=(worker,), daemon=True) for worker in workers]
    try:
        for thread in threads:
            thread.start()
        job = queue.get(args.job_id)
        reported = 0
        while job.state not in TERMINAL_STATES and time.monotonic() < stop_at:
            time.sleep(0.05)
            job = queue.get(args.job_id)
            if job.state == "retrying" and job.attempts != reported:
                reported = job.attempts
                print(f"RETRYING attempt {job.attempts}: {job.reason}", flush=True)
        for thread in threads:
            thread.join(timeout=10)
        print("JOB " + json.dumps(job.as_dict(), default=str), flush=True)
    finally:
        queue.close()
    return 0 if job.state in TERMINAL_STATES else 2


if __name__ == "__main__":
    sys.exit(serve_forks() if sys.argv[1:] == ["--serve-forks"] else main())
