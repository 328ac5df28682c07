"""The promotion's image is built from the facts policy checked, not from a second MLflow read.

A real MLflow registry (sqlite), the real MLflow adapter as the pipeline's registry port, the
composition's image port and a real OCI registry. Between the policy step and the image build,
MLflow changes under the promotion: the version's files are a copy (``copy_model_version``) of
a version logged in run R, and that original version is deleted. Read again at build time, the
copy would no longer be vouched for by R, and an image labelled without R would go out next to
manifests that name R. Built from the pipeline's facts, image and manifests agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from promoter.adapters.oci import RegistryClient
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.errors import UserError
from promoter.rendering import renderer
from promoter.service.composition.images import ModelImages
from promoter.service.composition.mlflow import adapter
from promoter.settings import Settings
from tests.core.test_pipeline import (
    INTENT_TAGS,
    SETTINGS,
    MemoryLedger,
    MemoryProvider,
    MemorySteps,
)
from tests.image.model import register_logged_model

pytestmark = pytest.mark.e2e
MODEL, ORIGIN, ENV = "fraud", "fraud-origin", "production"
RUN_LABEL = "io.promoter.model.run-id"


def register_copied_version(work: Path, tracking: str) -> str:
    """``fraud`` version 1: a copy of ``fraud-origin`` version 1, logged in a run (its id
    returned); the copy carries the intent tags."""
    import mlflow

    run_id = register_logged_model(work, tracking, "checked", ORIGIN)
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    copy = client.copy_model_version(f"models:/{ORIGIN}/1", MODEL)
    for key, value in INTENT_TAGS.items():
        client.set_model_version_tag(MODEL, copy.version, key, value)
    return run_id


def settings_for(tracking: str, registry: str, state: Path) -> Settings:
    return SETTINGS.model_copy(update={
        "state_dir": state,
        "mlflow": SETTINGS.mlflow.model_copy(update={"tracking_uri": tracking}),
        "image": SETTINGS.image.model_copy(update={"repository": f"{registry}/checked/{{name}}"}),
    })


def image_labels(registry: str, reference: str) -> dict[str, str]:
    repository, digest = reference.split("/", 1)[1].split("@")
    with RegistryClient(registry) as client:
        manifest = client.get_manifest(repository, digest)
        assert manifest is not None
        config = client.get_blob(repository, json.loads(manifest.body)["config"]["digest"])
    return dict(json.loads(config)["config"]["Labels"])


def test_the_image_names_the_run_policy_trusted_though_mlflow_changed_before_the_build(
        registry: str, tmp_path: Path) -> None:
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = register_copied_version(tmp_path, tracking)
    settings = settings_for(tracking, registry, tmp_path / "state")
    models = adapter(settings)
    models.set_alias(MODEL, ENV, "1")

    def meanwhile(step: str, outcome: str, detail: str = "") -> None:
        if (step, outcome) == ("policy", "ok"):  # checked: now MLflow changes under the build
            mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking) \
                .delete_model_version(ORIGIN, "1")

    ports = Ports(models, MemoryProvider(), MemoryLedger(), renderer(settings),
                  ModelImages(settings))
    result = Pipeline(settings.pipeline_config(), ports, meanwhile).run(
        PromotionJob(MODEL, ENV, "promote", "1"), MemorySteps())

    assert result.image is not None
    manifests = "".join(str(text) for text in ports.provider.branches[  # type: ignore[attr-defined]
        ports.provider.mrs[-1].source_branch].values())  # type: ignore[attr-defined]
    # policy trusted run R (quoted only where YAML would read it as a number: 6e29…)
    assert re.search(rf'promoter\.dev/mlflow-run-id: "?{run_id}"?\n', manifests)
    assert image_labels(registry, result.image).get(RUN_LABEL) == run_id  # and so does the image


def test_image_build_of_a_uri_resolves_the_lineage_a_promotion_would_check(
        registry: str, tmp_path: Path) -> None:
    """`promoter image build models:/…` reads the version itself (once), through the rule the
    pipeline applies; by number or by alias it finds the same version, run and content."""
    from promoter.core.lineage import checked_version, run_of

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = register_copied_version(tmp_path, tracking)
    models = adapter(settings_for(tracking, registry, tmp_path / "state"))
    models.set_alias(MODEL, "champion", "1")
    info = models.model_version(MODEL, "1")
    checked = models.checked_lineage(checked_version(models, info, run_of(models, info)))

    by_number = models.resolve_model(f"models:/{MODEL}/1")
    by_alias = models.resolve_model(f"models:/{MODEL}@champion")
    assert by_number == checked and checked.run_id == run_id
    assert by_alias.source == f"models:/{MODEL}@champion"
    assert (by_alias.name, by_alias.version, by_alias.run_id, by_alias.content_id) == (
        MODEL, "1", run_id, checked.content_id)


def test_image_build_downloads_the_version_its_alias_named_when_resolved(
        registry: str, tmp_path: Path) -> None:
    """The labels name the version the alias pointed at when resolved; the files must be that
    version's too, not whatever the alias points at when the download starts."""
    from promoter.image.model_input import model_input

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_copied_version(tmp_path, tracking)
    models = adapter(settings_for(tracking, registry, tmp_path / "state"))
    models.set_alias(MODEL, "champion", "1")
    found = model_input(f"models:/{MODEL}@champion", models)
    assert (found.lineage.version, found.files) == ("1", f"models:/{MODEL}/1")
    assert found.name == f"models:/{MODEL}@champion"          # what the user asked for


def test_a_runs_uri_climbing_out_of_its_run_names_no_run(registry: str, tmp_path: Path) -> None:
    """Without mlflow.artifact_roots nothing else stops it: the image must not be labelled
    with run R for files outside R (lineage's rule for runs:/ URIs)."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = register_copied_version(tmp_path, tracking)
    models = adapter(settings_for(tracking, registry, tmp_path / "state"))
    assert models.resolve_model(f"runs:/{run_id}/model").run_id == run_id
    with pytest.raises(UserError, match="not a model URI promoter understands"):
        models.resolve_model(f"runs:/{run_id}/../../other/model")
