"""`promoter demo`: start the embedded defaults, log and promote a model, show what happened.

The promotion takes the product's real path: the alias is set in MLflow, MLflow calls the
webhook of the `promoter serve` the demo started, and that server's worker runs the job. This
module only watches the job queue and reports; it never runs the pipeline itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promoter.commands.hooks import EVENTS
from promoter.core.jobs import Job
from promoter.demo import environment, model
from promoter.errors import TransientError
from promoter.settings import Settings

JOB_TIMEOUT_SECONDS = 900.0  # the first build installs the model's requirements
Say = Callable[[str], None]


@dataclass
class DemoReport:
    config: Path
    model: str
    version: str
    job: dict[str, Any]
    mr: dict[str, Any] | None = None
    diff: str = ""
    image: str | None = None
    signature: str | None = None
    notes: list[str] = field(default_factory=list)


def run(state_dir: Path, say: Say) -> DemoReport:
    from promoter.service import composition

    say(f"state directory: {state_dir}")
    env = environment.start(state_dir)
    say(f"MLflow server:    {env.mlflow_url}")
    layout = f"none installed: OCI layout in {env.directory / 'oci-layout'}"
    say(f"OCI registry:     {env.registry_url or layout}")
    say(f"promoter serve:   {env.serve_url}")
    say(f"configuration:    {env.config}")
    settings = env.settings()
    secret = settings.secret("PROMOTER_MLFLOW_WEBHOOK_SECRET")
    assert secret is not None  # written by environment.start
    hook_id, _ = composition.webhooks(settings).ensure_webhook(
        "promoter-demo", f"{env.serve_url}/webhooks/mlflow", EVENTS, secret.reveal())
    say(f"MLflow webhook:   {hook_id} → {env.serve_url}/webhooks/mlflow")
    version, created = model.ensure_version(env.mlflow_url)
    say(f"model:            {model.DEMO_MODEL!r} version {version} "
        f"({'logged and registered now' if created else 'registered by an earlier run'})")
    model.promote(env.mlflow_url, version)
    say(f"set alias production → version {version} in MLflow; waiting for the job …")
    job = _wait_for_job(settings.state_dir, model.DEMO_MODEL, version, say)
    report = DemoReport(env.config, model.DEMO_MODEL, version, job.as_dict())
    result = job.result or {}
    report.image = result.get("image")
    report.signature = result.get("signature")
    if result.get("mr_iid"):
        provider = composition.local_review(settings)
        report.mr = dataclasses.asdict(provider.get(int(result["mr_iid"])))
        report.diff = provider.diff(int(result["mr_iid"]))
    if report.image and settings.image.verification_key and not settings.image.oci_layout:
        report.signature = _verify(settings, report.image) or report.signature
    return report


def _wait_for_job(state_dir: Path, name: str, version: str, say: Say) -> Job:
    from promoter.service.queue import JobQueue

    queue = JobQueue.open(state_dir)
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    seen: str | None = None
    try:
        while time.monotonic() < deadline:
            job = _newest(queue, name, version)
            if job is not None and job.state != seen:
                seen = job.state
                say(f"  job {job.id}: {job.state}" + (f" ({job.reason})" if job.reason else ""))
            if job is not None and job.state in ("done", "dead"):
                return job
            time.sleep(0.5)
    finally:
        queue.close()
    raise TransientError(f"no finished job for {name!r} version {version} after "
                         f"{JOB_TIMEOUT_SECONDS:.0f} s",
                         hint="see `promoter --config <demo config> jobs list` and serve.log")


def _newest(queue: Any, name: str, version: str) -> Job | None:
    jobs = [job for job in queue.list(limit=200)
            if job.key.model == name and job.key.version == version
            and job.key.env == "production" and job.key.action == "promote"]
    return max(jobs, key=lambda job: job.id) if jobs else None


def _verify(settings: Settings, reference: str) -> str | None:
    """Checked as a user would: with the public key only (`promoter image verify`)."""
    from promoter.service import composition

    info = composition.cosign_verifier(settings).verify(reference)
    return f"verified ({', '.join(info.formats)}) with {settings.image.verification_key}"
