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
from promoter.demo import environment
from promoter.errors import PromoterError, TransientError
from promoter.progress import Progress
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
    reused: list[str] = field(default_factory=list)  # mlflow, registry, serve, model, job


def run(state_dir: Path, say: Say, progress: Progress | None = None) -> DemoReport:
    from promoter.service import composition

    # MLflow's process settings (telemetry off among them) before mlflow is imported and before
    # the demo's `mlflow server` inherits this environment; the model module imports mlflow.
    composition.mlflow.apply_client_settings()
    from promoter.demo import model

    progress = progress or Progress(False)
    say(f"state directory: {state_dir}")
    with progress.task("starting the demo's services"):
        env = environment.start(state_dir)
    for note in env.moved:
        say(f"moved:            {note}")

    def reused(name: str) -> str:
        return "  (reused: already running)" if name in env.reused else ""

    say(f"MLflow server:    {env.mlflow_url}{reused('mlflow')}")
    layout = (f"none installed: OCI layout in {env.directory / 'oci-layout'} (nothing is "
              "signed there; install docker-registry for signing)")
    say(f"OCI registry:     {env.registry_url or layout}{reused('registry')}")
    say(f"promoter serve:   {env.serve_url}{reused('serve')}")
    say(f"configuration:    {env.config}")
    settings = env.settings()
    secret = settings.secret("PROMOTER_MLFLOW_WEBHOOK_SECRET")
    assert secret is not None  # written by environment.start
    hook_id, _ = composition.webhooks(settings).ensure_webhook(
        "promoter-demo", f"{env.serve_url}/webhooks/mlflow", EVENTS, secret.reveal())
    say(f"MLflow webhook:   {hook_id} → {env.serve_url}/webhooks/mlflow")
    version, created = model.ensure_version(env.mlflow_url)
    earlier = _finished_job(settings.state_dir, model.DEMO_MODEL, version)
    stale = _stale_image(settings, earlier, env.registry_url)
    if stale:
        say(f"the image of version {version} ({stale}) is not in the registry at "
            f"{env.registry_url}; registering a new version so that MLflow, the image and the "
            "merge request all name the registry that runs now")
        version, created = model.ensure_version(env.mlflow_url, new=True)
        earlier = None
    say(f"model:            {model.DEMO_MODEL!r} version {version} "
        f"({'logged and registered now' if created else 'registered by an earlier run'})")
    model.promote(env.mlflow_url, version)
    if earlier is not None:
        say(f"alias production → version {version} is set; job {earlier.id} promoted it in "
            "an earlier run (reused)")
    else:
        say(f"set alias production → version {version} in MLflow; waiting for the job …")
    job = _wait_for_job(settings.state_dir, model.DEMO_MODEL, version, say, progress)
    report = DemoReport(env.config, model.DEMO_MODEL, version, job.as_dict(),
                        notes=list(env.moved),
                        reused=[*env.reused, *(["model"] if not created else []),
                                *(["job"] if earlier is not None else [])])
    result = job.result or {}
    report.image = result.get("image")
    report.signature = result.get("signature")
    if result.get("mr_iid"):
        provider = composition.local_review(settings)
        report.mr = dataclasses.asdict(provider.get(int(result["mr_iid"])))
        report.diff = provider.diff(int(result["mr_iid"]))
    if report.image and settings.image.verification_key:
        report.signature = _verify(settings, report.image) or report.signature
    return report


def _finished_job(state_dir: Path, name: str, version: str) -> Job | None:
    """The job an earlier run finished for this version (None when there is none)."""
    from promoter.service.queue import JobQueue

    queue = JobQueue.open(state_dir)
    try:
        job = _newest(queue, name, version)
    finally:
        queue.close()
    return job if job is not None and job.state == "done" else None


def _stale_image(settings: Settings, job: Job | None, registry_url: str | None) -> str | None:
    """The image reference of ``job`` when nothing can pull or verify it any more: it names
    another registry than the demo's now (the registry had to move to a new port), or the
    registry no longer has it (its data was removed). None when it is fine or there is none."""
    from promoter.image.reference import parse_reference
    from promoter.service import composition

    image = str((job.result or {}).get("image") or "") if job is not None else ""
    if not image or registry_url is None:
        return None
    if not image.startswith(registry_url.removeprefix("http://") + "/"):
        return image
    reference = parse_reference(image)
    try:
        with composition.registry_clients(settings)(reference.api_host) as client:
            found = client.manifest_digest(reference.repository, str(reference.digest))
    except PromoterError:
        return None  # the registry answers badly: verifying the image will say how
    return None if found == reference.digest else image


def _wait_for_job(state_dir: Path, name: str, version: str, say: Say,
                  progress: Progress) -> Job:
    """Follow the job the webhook made: its state changes and each step as it is recorded."""
    from promoter.service.queue import JobQueue

    queue = JobQueue.open(state_dir)
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    seen: str | None = None
    shown: set[str] = set()
    started = time.monotonic()
    try:
        with progress.task("waiting for the job") as task:
            while time.monotonic() < deadline:
                job = _newest(queue, name, version)
                if job is not None:
                    for step, result in queue.steps(job.id).items():
                        if step not in shown:
                            shown.add(step)
                            say(f"    {step}: {_summary(result)}")
                    if job.state != seen:
                        seen = job.state
                        say(f"  job {job.id}: {job.state}"
                            + (f" ({job.reason})" if job.reason else ""))
                    if job.state in ("done", "dead"):
                        return job
                    task.status(f"job {job.id}: {job.state}, {time.monotonic() - started:.0f} s"
                                " (the first image build installs the model's requirements)")
                time.sleep(0.5)
    finally:
        queue.close()
    raise TransientError(f"no finished job for {name!r} version {version} after "
                         f"{JOB_TIMEOUT_SECONDS:.0f} s",
                         hint="see `promoter --config <demo config> jobs list` and serve.log")


def _summary(result: dict[str, Any]) -> str:
    """One line for a recorded step: its reference/status, else its fields."""
    for key in ("reference", "status"):
        if result.get(key):
            return str(result[key])
    return ", ".join(f"{key}={value}" for key, value in sorted(result.items())
                     if not isinstance(value, (dict, list)))


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
