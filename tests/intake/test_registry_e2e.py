"""The MLflow adapter, the job handler and the reconcile pass against a real mlflow server."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from promoter.adapters.mlflow import MlflowRegistry
from promoter.errors import PermanentError, TransientError
from promoter.service import composition, intake
from promoter.service.jobs_handler import build_job_handler
from promoter.service.queue import JobQueue
from promoter.service.reconcile import ReconcileState, reconcile_once
from promoter.service.worker import Worker
from tests.fixtures.mlflow_server import MlflowServer, free_port
from tests.intake.conftest import make_settings
from tests.intake.models import GIT_COMMIT, create_version

pytestmark = pytest.mark.e2e

INTENT = """\
apiVersion: promoter.dev/v1alpha1
kind: ModelDeployment
spec:
  owner: {team: risk, costCenter: cc-42}
  resources: {gpu: {count: 1, type: nvidia-l4}}
"""


def test_the_adapter_reads_version_run_signature_and_intent(mlflow_server: MlflowServer) -> None:
    client = mlflow_server.client()
    version = create_version(client, "adapter-model", intent_yaml=INTENT,
                             tags={"deploy.resources.gpu.count": "2", "deploy.runtime": "kserve"})
    registry = MlflowRegistry(mlflow_server.url)
    info = registry.model_version("adapter-model", version)
    assert info.run_id and info.source.endswith("/model")
    run = registry.run(info.run_id)
    assert run.git_commit == GIT_COMMIT
    assert run.metrics["auc"] == pytest.approx(0.91) and run.params["C"] == "0.5"
    signature = registry.signature("adapter-model", version)
    assert signature is not None and "amount" in signature["inputs"]
    intent = registry.intent(info)
    # The logged file is merged over the deploy.* tags.
    assert intent["spec"]["resources"]["gpu"] == {"count": 1, "type": "nvidia-l4"}
    assert intent["spec"]["runtime"] == "kserve"
    assert intent["spec"]["owner"]["costCenter"] == "cc-42"


def test_artifact_roots_keep_model_files_to_the_allowed_stores(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """A version's source is whatever its registrant chose; promoter reads it with its own
    credentials. With mlflow.artifact_roots, a source elsewhere (another team's bucket, the
    pod's own files) is refused before anything is read, by every path that reads files."""
    from promoter.errors import UserError

    client = mlflow_server.client()
    version = create_version(client, "rooted-model", intent_yaml=INTENT)
    served = MlflowRegistry(mlflow_server.url, artifact_roots=("mlflow-artifacts:",))
    assert (served.artifacts.download_model(f"models:/rooted-model/{version}", tmp_path / "ok")
            / "MLmodel").exists()
    assert served.signature("rooted-model", version) is not None
    client.create_registered_model("stray-model")
    stray = client.create_model_version("stray-model", "s3://other-team-bucket/secret-model",
                                        run_id=None)
    for read in (lambda: served.artifacts.download_model(
                     f"models:/stray-model/{stray.version}", tmp_path / "stray"),
                 lambda: served.signature("stray-model", stray.version),
                 lambda: served.intent(served.model_version("stray-model", stray.version))):
        with pytest.raises(UserError, match=r"'s3://other-team-bucket/secret-model.*' are "
                                            r"outside mlflow\.artifact_roots"):
            read()
    narrow = MlflowRegistry(mlflow_server.url, artifact_roots=("mlflow-artifacts:/nowhere",))
    run_id = client.get_model_version("rooted-model", version).run_id
    with pytest.raises(UserError, match=r"outside mlflow\.artifact_roots"):
        narrow.artifacts.download(f"runs:/{run_id}/model/MLmodel", str(tmp_path / "runs"))


@pytest.mark.parametrize("up", ["%2e%2e", "%2E%2E", "%252e%252e", "..%2f..%2f{experiment}",
                                "./..", "?/..", "#/..", "/..", "..\\.."])
def test_artifact_roots_refuse_a_uri_a_store_would_decode_out_of_the_root(
        mlflow_server: MlflowServer, tmp_path: Path, up: str) -> None:
    """With a root narrowed to one run's directory, a URI that starts with that directory but
    climbs out of it once decoded or normalised (here into another run's model) is refused
    before anything is read, like any other place outside the roots. (This MLflow server
    refuses to register such a source, but older servers, other registries and runs:/ paths
    do not go through that check; promoter holds the line itself.)"""
    from promoter.errors import UserError

    client = mlflow_server.client()
    own = client.get_model_version("escape-own", create_version(client, "escape-own"))
    other = client.get_model_version("escape-other", create_version(client, "escape-other"))
    experiment = client.get_run(own.run_id).info.experiment_id
    own_run_dir = f"mlflow-artifacts:/{experiment}/{own.run_id}"
    assert own.source.startswith(f"{own_run_dir}/") and other.run_id != own.run_id
    up = up.format(experiment=experiment)
    climbing = f"{own_run_dir}/{up}/{other.run_id}/artifacts/model"
    rooted = MlflowRegistry(mlflow_server.url, artifact_roots=(own_run_dir,))
    assert (rooted.artifacts.download_model(f"models:/escape-own/{own.version}", tmp_path / "ok")
            / "MLmodel").exists()
    for read in (lambda: rooted.artifacts.download(f"{climbing}/MLmodel", str(tmp_path / "d")),
                 lambda: rooted.artifacts.listing(climbing),
                 lambda: rooted.artifacts.download(
                     f"runs:/{own.run_id}/{up}/{up}/{other.run_id}/artifacts/model/MLmodel",
                     str(tmp_path / "r"))):
        with pytest.raises(UserError, match=r"outside mlflow\.artifact_roots"):
            read()


def test_a_whole_scheme_root_does_not_hold_another_host(mlflow_server: MlflowServer,
                                                        tmp_path: Path) -> None:
    """mlflow-artifacts: is this tracking server's artifact proxy. A source naming another
    host (mlflow-artifacts://host:port/...) would have promoter send its MLflow credentials
    there; it is refused unless a root names that host."""
    from promoter.errors import UserError

    elsewhere = f"mlflow-artifacts://127.0.0.1:{free_port()}/1/r/artifacts/model/MLmodel"
    served = MlflowRegistry(mlflow_server.url, artifact_roots=("mlflow-artifacts:",))
    with pytest.raises(UserError, match=r"outside mlflow\.artifact_roots"):
        served.artifacts.download(elsewhere, str(tmp_path))


def test_write_back_tags_and_error_mapping(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    client = mlflow_server.client()
    version = create_version(client, "writeback-model")
    registry = MlflowRegistry(mlflow_server.url)
    registry.write_back("writeback-model", version, "staging",
                        {"status": "received", "mr_url": "https://gitlab.example/mr/1"})
    tags = client.get_model_version("writeback-model", version).tags
    assert tags["promoter.staging.status"] == "received"
    assert tags["promoter.staging.mr_url"] == "https://gitlab.example/mr/1"
    with pytest.raises(PermanentError, match="RESOURCE_DOES_NOT_EXIST"):
        registry.model_version("writeback-model", "99")
    down = composition.registry(make_settings(
        tmp_path, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransientError, match=r"unreachable|failed"):
        down.aliases("writeback-model")


def test_the_job_resolves_what_the_alias_points_at_now(mlflow_server: MlflowServer,
                                                        tmp_path: Path) -> None:
    from promoter.adapters import localgit
    from promoter.core.mr_text import escape
    from tests.fixtures.stack import DEPLOY_TAGS

    client = mlflow_server.client()
    first = create_version(client, "handler-model", tags=DEPLOY_TAGS)
    second = create_version(client, "handler-model", auc=0.95, tags=DEPLOY_TAGS)
    client.set_registered_model_alias("handler-model", "staging", first)
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    registry = MlflowRegistry(mlflow_server.url)
    queue = JobQueue.open(settings.state_dir)
    try:
        job = queue.enqueue(intake.JobKey("handler-model", first, "staging", "promote")).job
        client.set_registered_model_alias("handler-model", "staging", second)  # moved on since
        worker = Worker(queue, build_job_handler(settings, registry), heartbeat=False)
        assert worker.run_once()
        done = queue.get(job.id)
        assert done.state == "done", done.reason
        assert (done.result["requested_version"], done.result["version"]) == (first, second)
        assert done.result["outcome"] == "created"
        assert queue.steps(job.id)["policy"]["version"] == second
        # The MR is written from the registry's facts about the version it deploys.
        mr = localgit.from_settings(settings).get(done.result["mr_iid"])
        assert f"version {second}" in mr.title
        assert f"| auc | {escape('0.95')} |" in mr.description
        tags = client.get_model_version("handler-model", second).tags
        assert tags["promoter.staging.status"] == "mr_opened"
        assert "promoter.staging.status" not in client.get_model_version(
            "handler-model", first).tags
    finally:
        queue.close()


def test_a_missing_model_is_a_dead_job_with_the_reason(mlflow_server: MlflowServer,
                                                       tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    queue = JobQueue.open(settings.state_dir)
    try:
        job = queue.enqueue(intake.JobKey("no-such-model", "1", "production", "promote")).job
        Worker(queue, build_job_handler(settings, MlflowRegistry(mlflow_server.url)),
               heartbeat=False).run_once()
        dead = queue.get(job.id)
        assert dead.state == "dead" and "no-such-model" in (dead.reason or "")
    finally:
        queue.close()


def test_reconcile_finds_stage_transitions_alias_changes_and_deletions(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    client = mlflow_server.client()
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    registry = MlflowRegistry(mlflow_server.url)
    queue = JobQueue.open(settings.state_dir)
    state = ReconcileState(settings.state_dir)

    def keys(report: Any) -> set[tuple[str, str, str, str]]:
        return {(j["model"], j["version"], j["env"], j["action"]) for j in report.jobs
                if j["model"] == "stage-model"}

    try:
        create_version(client, "bystander-model")  # another model whose versions stay put
        reconcile_once(settings, registry, queue, state)  # baseline of what the server holds
        v1 = create_version(client, "stage-model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.transition_model_version_stage("stage-model", v1, "Production")
        report = reconcile_once(settings, registry, queue, state)
        assert keys(report) == {("stage-model", v1, "production", "promote")}
        assert report.stage_lookups >= 1
        assert keys(reconcile_once(settings, registry, queue, state)) == set()  # level, not edge
        # Cost follows changed versions: with nothing changed, only the version at the cursor
        # is read again, not every model's stages.
        quiet = reconcile_once(settings, registry, queue, state, slack_ms=0)
        assert quiet.models >= 2 and quiet.changed_versions <= 1 and quiet.stage_lookups <= 1
        v2 = create_version(client, "stage-model")
        client.set_registered_model_alias("stage-model", "production", v2)  # alias wins
        assert keys(reconcile_once(settings, registry, queue, state)) == {
            ("stage-model", v2, "production", "promote")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.transition_model_version_stage("stage-model", v1, "Archived")
        client.delete_registered_model_alias("stage-model", "production")
        assert keys(reconcile_once(settings, registry, queue, state)) == {
            ("stage-model", "*", "production", "decommission")}
        client.set_registered_model_alias("stage-model", "staging", v2)
        assert keys(reconcile_once(settings, registry, queue, state)) == {
            ("stage-model", v2, "staging", "promote")}
        client.delete_registered_model("stage-model")
        assert keys(reconcile_once(settings, registry, queue, state)) == {
            ("stage-model", "*", "staging", "decommission")}
    finally:
        state.close()
        queue.close()


@dataclass
class ReconcileWorld:
    """One promoter's reconcile side (its state, its queue) against the shared MLflow."""

    client: Any
    settings: Any
    registry: MlflowRegistry
    queue: JobQueue
    state: ReconcileState

    def reconcile(self, model: str, **options: Any) -> list[tuple[str, str, str, bool]]:
        """One pass: (version, env, action, created) of ``model``'s jobs."""
        report = reconcile_once(self.settings, self.registry, self.queue, self.state,
                                **options)
        return [(j["version"], j["env"], j["action"], j["created"]) for j in report.jobs
                if j["model"] == model]


@pytest.fixture
def world(mlflow_server: MlflowServer, tmp_path: Path) -> Iterator[ReconcileWorld]:
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    made = ReconcileWorld(mlflow_server.client(), settings, MlflowRegistry(mlflow_server.url),
                          JobQueue.open(settings.state_dir), ReconcileState(settings.state_dir))
    yield made
    made.state.close()
    made.queue.close()


def test_a_rollback_whose_hook_was_lost_after_a_webhooks_job_is_caught(
        world: ReconcileWorld) -> None:
    """The pass recorded version 1; a delivered hook's job then moved production to 2; the
    alias went back to 1 while promoter was down. The record still says 1, as MLflow does, but
    the newest job asked for 2: the pass brings production back to 1."""
    from promoter.core.events import PromotionEvent

    client, queue = world.client, world.queue
    v1 = create_version(client, "rollback-model")
    v2 = create_version(client, "rollback-model")
    client.set_registered_model_alias("rollback-model", "production", v1)
    world.reconcile("rollback-model")
    client.set_registered_model_alias("rollback-model", "production", v2)
    [stored] = intake.enqueue(queue, [PromotionEvent(
        action="promote", source="mlflow", reason="alias set", model="rollback-model",
        version=v2, env="production", trigger="production")], source="mlflow")
    for _ in range(1000):        # that job, and the first pass's, done
        job = queue.claim("worker")
        if job is None:
            break
        queue.complete(job.id, "worker", {})
    assert queue.get(stored.job_id).state == "done"
    client.set_registered_model_alias("rollback-model", "production", v1)  # hook lost

    assert world.reconcile("rollback-model") == [(v1, "production", "promote", True)]
    assert world.reconcile("rollback-model") == []      # asked for now: level, not edge


def test_a_model_a_hook_promoted_and_deleted_before_any_pass_is_decommissioned(
        world: ReconcileWorld) -> None:
    """No pass ever listed the model, so nothing recorded it; only the delivered hook's job
    knows it was deployed. Once it is gone, the pass decommissions what that job proposed."""
    from promoter.core.events import PromotionEvent

    client, queue = world.client, world.queue
    world.reconcile("hook-only-model")                     # the record holds other models
    v1 = create_version(client, "hook-only-model")
    client.set_registered_model_alias("hook-only-model", "production", v1)
    intake.enqueue(queue, [PromotionEvent(
        action="promote", source="mlflow", reason="alias set", model="hook-only-model",
        version=v1, env="production", trigger="production")], source="mlflow")
    client.delete_registered_model("hook-only-model")

    assert world.reconcile("hook-only-model") == [("*", "production", "decommission", True)]
    assert world.reconcile("hook-only-model") == []        # asked for now: level, not edge


def test_deleting_the_version_that_held_the_stage_decommissions(world: ReconcileWorld) -> None:
    """A deleted version is not among the versions updated since the cursor, and the model
    may have none left to list: its registered model's timestamp is what moves."""
    v1 = create_version(world.client, "staged-model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        world.client.transition_model_version_stage("staged-model", v1, "Production")
    assert world.reconcile("staged-model") == [(v1, "production", "promote", True)]
    time.sleep(0.01)     # a later millisecond for MLflow's timestamps than the cursor's
    world.client.delete_model_version("staged-model", v1)
    assert world.reconcile("staged-model") == [("*", "production", "decommission", True)]
    assert world.reconcile("staged-model", slack_ms=0) == []


def test_one_model_whose_stages_cannot_be_listed_does_not_stop_the_pass(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """MLflow times out listing one model's stages (very many versions): the models after it
    are still reconciled, its alias is still observed, and its stage transition is found by
    the next pass (the version cursor did not move past it)."""
    client = mlflow_server.client()
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    real = MlflowRegistry(mlflow_server.url)

    class Timeouts:
        broken = True

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def stage_versions(self, model: str) -> Any:
            if self.broken and model == "a-broken":
                raise TransientError("MLflow did not answer within 30 s")
            return real.stage_versions(model)

    registry = Timeouts()
    queue = JobQueue.open(settings.state_dir)
    state = ReconcileState(settings.state_dir)
    try:
        reconcile_once(settings, registry, queue, state)   # baseline
        broken, good = create_version(client, "a-broken"), create_version(client, "b-good")
        other = create_version(client, "a-broken")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.transition_model_version_stage("a-broken", broken, "Production")
            client.transition_model_version_stage("b-good", good, "Staging")
        client.set_registered_model_alias("a-broken", "staging", other)

        first = reconcile_once(settings, registry, queue, state)  # type: ignore[arg-type]
        assert [f["model"] for f in first.failed] == ["a-broken"]
        assert {(j["model"], j["env"]) for j in first.jobs} == {
            ("a-broken", "staging"), ("b-good", "staging")}
        registry.broken = False
        second = reconcile_once(settings, registry, queue, state)  # type: ignore[arg-type]
        assert second.failed == []
        assert {(j["model"], j["version"], j["env"]) for j in second.jobs} == {
            ("a-broken", broken, "production")}
    finally:
        state.close()
        queue.close()


def test_the_periodic_loop_catches_a_stage_transition(mlflow_server: MlflowServer,
                                                      tmp_path: Path) -> None:
    import threading

    from promoter.service.reconcile import run_periodically
    from promoter.settings import load_settings

    config = tmp_path / "promoter.yaml"
    config.write_text("server:\n  reconcile_interval_seconds: 1\n")
    settings = load_settings(config, {"PROMOTER_STATE_DIR": str(tmp_path / "state"),
                                      "MLFLOW_TRACKING_URI": mlflow_server.url})
    queue = JobQueue.open(settings.state_dir)
    stop = threading.Event()
    sweeps: list[float] = []

    def mr_sweep() -> None:  # a forge outage: logged, and the loop goes on
        sweeps.append(time.monotonic())
        raise TransientError("GitLab is down")

    loop = threading.Thread(target=run_periodically, args=(
        settings, MlflowRegistry(mlflow_server.url), queue, stop.wait, None, mr_sweep),
        daemon=True)
    loop.start()
    try:
        client = mlflow_server.client()
        version = create_version(client, "periodic-model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.transition_model_version_stage("periodic-model", version, "Production")
        deadline = time.monotonic() + 60
        found: list[Any] = []
        while not found and time.monotonic() < deadline:
            found = [j for j in queue.list() if j.key.model == "periodic-model"]
            time.sleep(0.3)
        assert [(j.key.version, j.key.env, j.key.action) for j in found] == [
            (version, "production", "promote")]
        assert found[0].payload["source"] == "reconcile"
    finally:
        stop.set()
        loop.join(60)
        queue.close()
    assert not loop.is_alive()
    assert sweeps                        # each pass of the leader also runs the MR sweep


def test_a_hostile_logged_intent_ends_invalid_in_mlflow_at_once(mlflow_server: MlflowServer,
                                                                 tmp_path: Path) -> None:
    """A few hundred bytes of nested YAML aliases logged as modeldeployment.yaml once held the
    only worker for a minute and a gigabyte; now the job is parked at once as invalid."""
    from tests.fixtures.stack import DEPLOY_TAGS
    from tests.test_intent_yaml import ALIAS_BOMB

    client = mlflow_server.client()
    version = create_version(client, "bomb-model", intent_yaml=ALIAS_BOMB, tags=DEPLOY_TAGS)
    client.set_registered_model_alias("bomb-model", "staging", version)
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    queue = JobQueue.open(settings.state_dir)
    try:
        job = queue.enqueue(intake.JobKey("bomb-model", version, "staging", "promote")).job
        Worker(queue, build_job_handler(settings, MlflowRegistry(mlflow_server.url)),
               heartbeat=False).run_once()
        parked = queue.get(job.id)
        assert parked.state == "dead" and "anchors or aliases" in (parked.reason or "")
        assert parked.attempts == 1   # not retried: the owner has to fix it
        tags = client.get_model_version("bomb-model", version).tags
        assert tags["promoter.staging.status"] == "invalid"
        assert "anchors or aliases" in tags["promoter.staging.reason"]
    finally:
        queue.close()


@pytest.mark.parametrize(("intent_yaml", "said"), [
    ("spec:\n  runtime: ._\n", "spec.runtime"),                        # was a bare ValueError
    ("spec:\n  scaling:\n    target: " + "9" * 5000 + "\n", "4300 digits"),  # so was this
], ids=["plain ._", "int over 4300 digits"])
def test_a_logged_intent_ruamel_cannot_build_ends_invalid_not_unexpected(
        mlflow_server: MlflowServer, tmp_path: Path, intent_yaml: str, said: str) -> None:
    """Loading such a modeldeployment.yaml raised ValueError, which the pipeline's intent step
    did not take for the owner's mistake: the job was retried as unexpected and parked, and
    the version never tagged invalid."""
    from tests.fixtures.stack import DEPLOY_TAGS

    client = mlflow_server.client()
    version = create_version(client, "odd-scalar-model", intent_yaml=intent_yaml,
                             tags=DEPLOY_TAGS)
    client.set_registered_model_alias("odd-scalar-model", "staging", version)
    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    queue = JobQueue.open(settings.state_dir)
    try:
        job = queue.enqueue(intake.JobKey("odd-scalar-model", version, "staging",
                                          "promote")).job
        Worker(queue, build_job_handler(settings, MlflowRegistry(mlflow_server.url)),
               heartbeat=False).run_once()
        parked = queue.get(job.id)
        assert parked.state == "dead" and parked.attempts == 1, parked.reason
        assert said in (parked.reason or "")
        tags = client.get_model_version("odd-scalar-model", version).tags
        assert tags["promoter.staging.status"] == "invalid"
        assert said in tags["promoter.staging.reason"]
    finally:
        queue.close()


def test_a_metric_gate_reads_only_the_run_the_model_files_come_from(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """MLflow 3 checks a models:/m-<id> source against the model_id, never the logged model's
    run against the run_id: a model logged in an untested run can be registered naming a run
    that logged auc=0.99. `auc >= 0.9` denies it with the reason; a model logged in its run
    and registered from it passes, as does an MLflow 2 style version in its run's artifacts."""
    import mlflow

    from promoter.demo import model as demo
    from tests.fixtures.stack import DEPLOY_TAGS

    client = mlflow_server.client()
    name = "lineage-model"
    good = create_version(client, name, auc=0.99, tags=DEPLOY_TAGS)
    good_run = client.get_model_version(name, good).run_id
    logged, _ = demo.ensure_version(mlflow_server.url, new=True)   # log_model, register_model
    assert client.get_model_version(demo.DEMO_MODEL, logged).source.startswith("models:/m-")
    with mlflow.start_run(run_name="untested") as untested:        # no metrics at all
        model_id = mlflow.pyfunc.log_model(name="model", python_model=demo.FraudScore(),
                                           pip_requirements=demo.requirements()).model_id
    foreign = client.create_model_version(name, source=f"models:/{model_id}", run_id=good_run,
                                          model_id=model_id, tags=DEPLOY_TAGS).version
    assert client.get_model_version(name, foreign).run_id == good_run   # MLflow accepted it

    settings = make_settings(tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url)
    settings = settings.model_copy(update={"policy": settings.policy.model_validate(
        {"gates": [{"rule": "metric", "check": "auc >= 0.9"}]})})
    # mlflow.artifact_roots does not help: both models' files are in the allowed store.
    registry = MlflowRegistry(mlflow_server.url, artifact_roots=("mlflow-artifacts:",))
    queue = JobQueue.open(settings.state_dir)
    try:
        def promote(model: str, version: str) -> tuple[Any, dict[str, str]]:
            client.set_registered_model_alias(model, "staging", version)
            job = queue.enqueue(intake.JobKey(model, version, "staging", "promote")).job
            Worker(queue, build_job_handler(settings, registry), heartbeat=False).run_once()
            return queue.get(job.id), client.get_model_version(model, version).tags

        _, tags = promote(name, foreign)
        assert tags["promoter.staging.status"] == "denied"
        assert tags["promoter.staging.reason"].startswith(
            f"metric:auc: the version's files at 'models:/{model_id}' are not from run "
            f"{good_run}; register the model from the run that validated it")
        assert untested.info.run_id != good_run
        # The image built from it does not name the run as its origin either.
        assert registry.resolve_model(f"models:/{name}/{foreign}").run_id is None
        assert registry.resolve_model(f"models:/{name}/{good}").run_id == good_run
        for model, version in ((name, good), (demo.DEMO_MODEL, logged)):
            done, tags = promote(model, version)
            assert tags["promoter.staging.status"] == "mr_opened", done.reason
            assert queue.steps(done.id)["policy"]["allowed"] is True
    finally:
        queue.close()
