"""A registered model deleted from MLflow while promoter runs it: the reconcile loop's
decommission removes its overlay and base through one MR, and that MR's merge is recorded,
against a real MLflow server, the local git provider, the job queue and the MR sweep."""

from __future__ import annotations

from pathlib import Path

from promoter.adapters import localgit
from promoter.adapters.mlflow import MlflowRegistry
from promoter.ports.git import Proposal
from promoter.ports.pipeline import DeployedState
from promoter.service import composition
from promoter.service.jobs_handler import build_job_handler
from promoter.service.ledger import StateLedger
from promoter.service.queue import JobQueue
from promoter.service.reconcile import ReconcileState, reconcile_once
from promoter.service.worker import Worker
from promoter.settings import Settings
from tests.fixtures.mlflow_server import MlflowServer
from tests.intake.conftest import make_settings
from tests.intake.models import create_version

MODEL = "deleted-while-deployed"   # also its deployment name
ROOT = "manifests"                 # the default git.manifests_dir


def _deployed_in_staging(settings: Settings, version: str) -> None:
    """What a merged staging promotion leaves: base and overlay on main, the ledger row."""
    provider = localgit.from_settings(settings)
    merged = provider.propose(Proposal(
        model=MODEL, name=MODEL, env="staging", version=version, title="t", description="d",
        files={f"{ROOT}/{MODEL}/base/kustomization.yaml":
               f'commonAnnotations:\n  promoter.dev/registered-model: "{MODEL}"\n',
               f"{ROOT}/{MODEL}/overlays/staging/kustomization.yaml":
               f'commonAnnotations:\n  promoter.dev/model-version: "{version}"\n'},
        managed_prefixes=()))
    assert merged.mr_iid is not None and provider.merge(merged.mr_iid, "alice")
    StateLedger(settings.state_dir).put(
        DeployedState(MODEL, "staging", MODEL, version, "merged", merged.mr_iid))


def test_deleting_a_deployed_registered_model_decommissions_its_overlay_and_base(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """Before, the decommission read the deleted model's alias, MLflow answered "does not
    exist", and the job was parked dead: overlay and base stayed until `promoter gc`."""
    client = mlflow_server.client()
    settings = make_settings(tmp_path / "state", MLFLOW_TRACKING_URI=mlflow_server.url)
    registry = MlflowRegistry(mlflow_server.url)
    queue = JobQueue.open(settings.state_dir)
    state = ReconcileState(settings.state_dir)
    try:
        version = create_version(client, MODEL)
        client.set_registered_model_alias(MODEL, "staging", version)
        reconcile_once(settings, registry, queue, state)
        # The first pass of a fresh state enqueues every model the shared server holds:
        # all done here (this model's MR merged: as below).
        while (job := queue.claim("w")) is not None:
            queue.complete(job.id, "w", {})
        _deployed_in_staging(settings, version)

        client.delete_registered_model(MODEL)
        reconcile_once(settings, registry, queue, state)
        [queued] = [job for job in queue.list(limit=10_000)
                    if job.key.action == "decommission" and job.key.model == MODEL]
        Worker(queue, build_job_handler(settings, registry),
               heartbeat=False).run_once(job_id=queued.id)

        removal = queue.get(queued.id)
        assert (removal.state, removal.reason) == ("done", None)
        assert removal.result["removes"] == [f"{ROOT}/{MODEL}/overlays/staging/",
                                             f"{ROOT}/{MODEL}/base/"]
        provider = localgit.from_settings(settings)
        iid = removal.result["mr_iid"]
        provider.approve(iid, "alice")
        if provider.get(iid).state == "opened":
            provider.merge(iid, "alice")
        assert provider.files(f"{ROOT}/{MODEL}/", "main") == {}

        # The merge is recorded (not retried for good on a write-back MLflow cannot take).
        sweep = composition.mr_sweep(settings, composition.outcomes(settings, registry))
        sweep()
        row = StateLedger(settings.state_dir).get(MODEL, "staging")
        assert row is not None and row.status == "decommissioned"
        events = [entry["event"] for entry in composition.audit_trail(settings).entries()
                  if entry.get("model") == MODEL]
        assert "write_back.skipped" in events and "job.created" in events
    finally:
        state.close()
        queue.close()
