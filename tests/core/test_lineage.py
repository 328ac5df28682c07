"""Lineage: a version's run vouches for it (metric and CEL gates, the MR, the manifests) only
when the version's files come from that run. MLflow lets the registrant pair any source with
any run_id, so a run that logged auc=0.99 must not pass files it never produced."""

from __future__ import annotations

import dataclasses

import pytest

from promoter.core.lineage import run_of, source_belongs_to_run
from promoter.errors import PolicyDenied
from promoter.ports.registry import ModelVersionInfo, RunInfo
from tests.core.test_gates import settings_with
from tests.core.test_pipeline import MODEL, MemoryRegistry, World

RUN = "0a1b2c3d4e5f"
ROOT = f"s3://ml-artifacts/7/{RUN}/artifacts"


@pytest.mark.parametrize(("source", "belongs"), [
    (f"runs:/{RUN}/model", True),
    (f"runs:/{RUN}", True),
    ("runs:/ffffffffffff/model", False),                  # another run's files
    (f"runs:/{RUN}/../../ffffffffffff/artifacts/model", False),  # climbing out of the run
    (f"runs://{RUN}/model", False),
    (f"{ROOT}/model", True),                               # MLflow 2 registrations
    (f"{ROOT}/model/", True),
    (ROOT, True),
    (f"{ROOT}/", True),
    ("s3://ml-artifacts/7/0a1b2c3d4e5f-evil/artifacts/model", False),  # prefix, not a segment
    (f"{ROOT}-evil/model", False),
    (f"{ROOT}/../../ffffffffffff/artifacts/model", False),
    (f"{ROOT}/./model", False),
    (f"{ROOT}/%2e%2e/%2e%2e/ffffffffffff/artifacts", False),  # decoded by some stores
    (f"{ROOT}/model?x=1", False),
    (f"{ROOT}/model#frag", False),
    ("s3://other-bucket/7/0a1b2c3d4e5f/artifacts/model", False),
    ("gs://ml-artifacts/7/0a1b2c3d4e5f/artifacts/model", False),
    ("S3://ml-artifacts/7/0a1b2c3d4e5f/artifacts/model", True),  # schemes are case-free
    ("s3://ml-artifacts/7/0a1b2c3d4e5f", False),           # the parent of the run's artifacts
    ("s3://team-b-scratch/untested-model", False),
    ("models:/m-abc123", False),                           # a logged model of unknown run
    ("", False),
])
def test_which_sources_belong_to_the_run(source: str, belongs: bool) -> None:
    assert source_belongs_to_run(source, RUN, run_artifact_uri=ROOT) is belongs


def test_a_logged_model_belongs_to_the_run_it_was_logged_in() -> None:
    belongs = source_belongs_to_run("models:/m-abc123", RUN, run_artifact_uri=ROOT,
                                    logged_model_run_id=RUN)
    assert belongs is True
    assert source_belongs_to_run("models:/m-abc123", RUN, run_artifact_uri=ROOT,
                                 logged_model_run_id="ffffffffffff") is False


@pytest.mark.parametrize("artifact_uri", ["s3://ml-artifacts", "s3://ml-artifacts/",
                                          "mlflow-artifacts:", "", "s3://ml-artifacts/%2e"])
def test_a_run_whose_artifact_uri_is_a_whole_store_vouches_for_nothing(artifact_uri: str) -> None:
    """MLflow puts a run's files at <experiment location>/<run_id>/artifacts; a run whose
    artifact_uri is a whole bucket or scheme would otherwise vouch for all of it."""
    assert source_belongs_to_run("s3://ml-artifacts/anything/model", RUN,
                                 run_artifact_uri=artifact_uri) is False
    assert source_belongs_to_run("mlflow-artifacts:/1/x/artifacts/model", RUN,
                                 run_artifact_uri=artifact_uri) is False


# ------------------------------------------------------------------ run_of over the Registry port

def registry_with(source: str, *, run_id: str | None = "run1") -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.add(MODEL, "1")
    info = registry.versions[(MODEL, "1")]
    registry.versions[(MODEL, "1")] = dataclasses.replace(info, source=source, run_id=run_id)
    return registry


def test_run_of_trusts_a_logged_model_of_the_run_and_distrusts_a_foreign_one() -> None:
    registry = registry_with("models:/m-42")
    registry.logged_models["m-42"] = "run1"
    assert run_of(registry, registry.versions[(MODEL, "1")]).run == registry.runs["run1"]
    registry.logged_models["m-42"] = "run9"
    found = run_of(registry, registry.versions[(MODEL, "1")])
    assert found.run is None
    assert found.doubt and "files at 'models:/m-42' are not from run run1" in found.doubt


def test_run_of_follows_copied_versions_to_the_run_that_produced_them() -> None:
    registry = registry_with(f"models:/{MODEL}/2")
    registry.versions[(MODEL, "2")] = ModelVersionInfo(
        MODEL, "2", "mlflow-artifacts:/1/run1/artifacts/model", "run1", None)
    assert run_of(registry, registry.versions[(MODEL, "1")]).run is not None
    # The copied version names the run, but its own files are from elsewhere.
    registry.versions[(MODEL, "2")] = ModelVersionInfo(MODEL, "2", "s3://x/untested", "run1",
                                                       None)
    assert run_of(registry, registry.versions[(MODEL, "1")]).doubt
    registry.versions[(MODEL, "2")] = ModelVersionInfo(MODEL, "2", f"models:/{MODEL}/1",
                                                       "run1", None)   # a loop
    assert run_of(registry, registry.versions[(MODEL, "1")]).doubt
    assert run_of(registry_with(f"models:/{MODEL}/9"), registry.versions[(MODEL, "1")]).doubt


def test_a_version_without_a_run_has_no_run_and_no_doubt() -> None:
    registry = registry_with("s3://anywhere/model", run_id=None)
    found = run_of(registry, registry.versions[(MODEL, "1")])
    assert (found.run, found.doubt) == (None, None)


# ------------------------------------------------------------------ the pipeline

FOREIGN = "s3://team-b-scratch/untested-model"


def with_foreign_source(world: World, version: str = "2") -> None:
    info = world.registry.versions[(MODEL, version)]
    world.registry.versions[(MODEL, version)] = dataclasses.replace(info, source=FOREIGN)
    assert world.registry.runs[f"run{version}"].metrics["auc"] == pytest.approx(0.91)


def test_a_metric_gate_denies_files_that_are_not_from_the_run_with_the_metrics(
        world: World) -> None:
    world.settings = settings_with({"gates": [{"rule": "metric", "check": "auc >= 0.9"}]})
    with_foreign_source(world)
    with pytest.raises(PolicyDenied) as denied:
        world.promote("2")
    [reason] = denied.value.reasons
    assert reason.startswith(f"metric:auc: the version's files at '{FOREIGN}' are not from run "
                             "run2; register the model from the run that validated it")
    assert world.registry.tags(MODEL, "2")["promoter.production.reason"] == reason
    assert world.provider.mrs == []
    assert world.promote("3").outcome == "created"   # a version logged in its run passes


def test_a_denial_quotes_the_foreign_source_without_its_credentials(world: World) -> None:
    """The denial quoted the source as registered, so a password or a presigned URL's
    signature went into the MLflow reason tag, the MR and the hash-sealed audit trail."""
    world.settings = settings_with({"gates": [
        {"rule": "metric", "check": "auc >= 0.9"},
        {"rule": "cel", "name": "auc", "expression": "metrics.auc >= 0.9"}]})
    info = world.registry.versions[(MODEL, "2")]
    source = ("https://alice:hunter2@models.example.com/fraud/model.tar.gz"
              "?X-Amz-Signature=deadbeef&X-Amz-Security-Token=s3cr3t")
    world.registry.versions[(MODEL, "2")] = dataclasses.replace(info, source=source)
    with pytest.raises(PolicyDenied) as denied:
        world.promote("2")
    tag = world.registry.tags(MODEL, "2")["promoter.production.reason"]
    for text in (*denied.value.reasons, tag, str(denied.value)):
        assert not any(secret in text for secret in ("hunter2", "alice", "deadbeef", "s3cr3t"))
    assert ("the version's files at 'https://***@models.example.com/fraud/model.tar.gz"
            "?X-Amz-Signature=***&X-Amz-Security-Token=***' are not from run run2") in tag
    assert len(denied.value.reasons) == 2


def test_a_long_source_is_masked_before_it_is_cut_short() -> None:
    """Cut at 200 characters first, a password running past the cut lost its "@", and the
    mask no longer saw it for userinfo."""
    from promoter.core.lineage import foreign_source

    text = foreign_source("https://alice:" + "p" * 300 + "@models.example.com/m", "run1")
    assert "ppp" not in text and "https://***@models.example.com/m" in text


def test_cel_rules_over_the_run_deny_and_rules_over_the_intent_still_decide(
        world: World) -> None:
    world.settings = settings_with({"gates": [
        {"rule": "cel", "name": "auc", "expression": "metrics.auc >= 0.9"},
        {"rule": "cel", "name": "tuned", "expression": "has(params.C)", "message": "tune C"},
        {"rule": "cel", "name": "one-gpu", "expression": "intent.spec.resources.gpu.count <= 1"},
    ]})
    with_foreign_source(world)
    with pytest.raises(PolicyDenied) as denied:
        world.promote("2")
    assert [reason.split(":", 2)[1] for reason in denied.value.reasons] == ["auc", "tuned"]
    assert f"(the version's files at '{FOREIGN}' are not from run run2;" in \
        denied.value.reasons[1]


def test_without_run_gates_the_mr_and_manifests_do_not_name_the_run_as_origin(
        world: World) -> None:
    with_foreign_source(world)
    result = world.promote("2")
    description = world.provider.get(result.mr_iid).description
    assert "**MLflow run:** not established: the version's files at" in description
    assert "run2" in description and "#/runs/run2" not in description
    assert "| auc |" not in description
    assert "promoter.dev/mlflow-run-id" not in overlay_and_base(world)
    assert FOREIGN in overlay_and_base(world)      # the source is still recorded as it is


def overlay_and_base(world: World) -> str:
    tree = world.provider.branches[world.provider.mrs[-1].source_branch]
    return "".join(str(text) for path, text in tree.items() if path.endswith(".yaml"))


def test_run_info_fake_matches_the_sources_it_registers() -> None:
    """The in-memory registry's versions are logged in their runs, as create_version does."""
    registry = MemoryRegistry()
    registry.add(MODEL, "5")
    info = registry.versions[(MODEL, "5")]
    assert isinstance(registry.runs["run5"], RunInfo)
    assert run_of(registry, info).run == registry.runs["run5"]


def test_the_image_port_is_handed_the_version_and_run_policy_checked(world: World) -> None:
    """The build labels the image with these facts and reads neither again (a re-read could
    see another run, or a run that no longer vouches)."""
    with_foreign_source(world)
    world.promote("2")
    world.promote("3")
    foreign, logged = world.images.checked
    assert (foreign.version, foreign.source, foreign.files, foreign.run_id) == (
        "2", FOREIGN, FOREIGN, None)   # no run vouches for files that are not its own
    assert (logged.version, logged.run_id) == ("3", "run3")
    assert logged.files == world.registry.artifact_location(MODEL, "3")
