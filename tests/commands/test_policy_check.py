"""`promoter policy check`: the pipeline's verdict locally; exit 0 allowed, 4 denied."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.commands.test_render import VALID, write_intent
from tests.fixtures.mlflow_server import MlflowServer

Run = Callable[..., tuple[int, str, str]]


def config(tmp_path: Path, policy: dict[str, object]) -> str:
    path = tmp_path / "promoter.yaml"
    path.write_text(json.dumps({"policy": policy}))
    return str(path)


GATES = {"teams": {"risk": {"environments": ["staging"]}},
         "gates": [{"rule": "cel", "name": "one-gpu", "expression":
                    "intent.spec.resources.gpu.count <= 1", "message": "at most one GPU"}]}


def test_an_allowed_intent_exits_0_listing_every_rule(run_cli: Run, tmp_path: Path) -> None:
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    code, out, err = run_cli("policy", "check", "--intent", str(intent), "--env", "staging",
                             "--config", config(tmp_path, GATES))
    assert code == 0, err
    assert "pass  team-permission: team 'risk' may deploy to staging" in out
    assert "pass  cel:one-gpu" in out and out.rstrip().endswith("allowed")


def test_a_denied_intent_exits_4_with_each_reason(run_cli: Run, tmp_path: Path) -> None:
    document = json.loads(json.dumps(VALID))
    document["spec"]["resources"] = {"gpu": {"count": 2}}
    intent = write_intent(tmp_path / "intent.yaml", document)
    code, out, _ = run_cli("policy", "check", "--intent", str(intent), "--env", "production",
                           "--config", config(tmp_path, GATES), "--output", "json")
    assert code == 4
    verdict = json.loads(out)
    assert verdict["allowed"] is False
    assert verdict["reasons"] == [
        "team-permission: team 'risk' may not deploy to production (allowed: staging)",
        "cel:one-gpu: at most one GPU"]


def test_bad_input_is_exit_1_and_missing_arguments_exit_2(run_cli: Run, tmp_path: Path) -> None:
    code, _, err = run_cli("policy", "check", "--env", "staging")
    assert code == 2 and "--intent" in err
    intent = write_intent(tmp_path / "intent.yaml", VALID)
    code, _, err = run_cli("policy", "check", "--intent", str(intent), "--env", "moon")
    assert code == 1 and "unknown environment 'moon'" in err


def test_an_intent_the_pipeline_marks_invalid_is_invalid_here(run_cli: Run,
                                                               tmp_path: Path) -> None:
    """A MIG profile production's GPU nodes do not offer: the pipeline's build_request refuses
    the intent (invalid), and `policy check` only resolved it and said "allowed"."""
    from promoter.core.intent import build_request
    from promoter.errors import UserError
    from promoter.settings import load_settings

    path = tmp_path / "promoter.yaml"
    path.write_text(json.dumps({"environments": {"production": {
        "trigger": {"alias": "production"}, "namespace": "models-production",
        "mig_profiles": ["1g.10gb"]}}}))
    document = json.loads(json.dumps(VALID))
    document["spec"]["resources"] = {"gpu": {"count": 1, "type": "NVIDIA-A100-SXM4-80GB",
                                             "mig": "7g.80gb"}}
    intent = write_intent(tmp_path / "intent.yaml", document)
    with pytest.raises(UserError) as pipeline:
        build_request(load_settings(path, environ={}).targets(), document, "production",
                      origin=str(intent))
    code, out, err = run_cli("policy", "check", "--intent", str(intent), "--env", "production",
                             "--config", str(path))
    assert code == 1, out
    assert pipeline.value.message in err
    assert "'7g.80gb' is not a MIG profile the production GPU nodes offer (1g.10gb)" in err


@pytest.mark.e2e
def test_a_version_in_mlflow_is_checked_with_its_tags_and_metrics(
        run_cli: Run, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    client = mlflow_server.client()
    name = "Policy Check Model"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment("policy-check"))
    client.log_metric(run.info.run_id, "auc", 0.87)
    version = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id, tags={
        "deploy.owner.team": "risk", "deploy.owner.costCenter": "cc-9",
        "validation_status": "passed"}).version
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    policy = {"required_tags": {"validation_status": "passed"},
              "gates": [{"rule": "metric", "check": "auc >= 0.9"}]}
    code, out, _ = run_cli("policy", "check", "--model", name, "--version", version,
                           "--env", "staging", "--config", config(tmp_path, policy))
    assert code == 4
    assert "pass  tag validation_status" in out
    assert "DENY  metric:auc: auc = 0.87 fails auc >= 0.9" in out
    client.log_metric(run.info.run_id, "auc", 0.93)
    code, out, _ = run_cli("policy", "check", "--model", name, "--version", version,
                           "--env", "staging", "--config", config(tmp_path, policy))
    assert code == 0 and "pass  metric:auc: auc = 0.93" in out


def test_an_intent_rendering_refuses_is_refused_here(run_cli: Run, tmp_path: Path) -> None:
    """A KServe InferenceService whose host name label would pass 63 characters: the
    pipeline's render (Renderer.check) refuses it after an allowed verdict, and `policy check`
    said "allowed"."""
    from promoter.core.intent import build_request
    from promoter.errors import UserError
    from promoter.rendering import renderer
    from promoter.service.composition import pipeline_config
    from promoter.settings import load_settings

    document = json.loads(json.dumps(VALID))
    document["metadata"]["name"] = "fraud-detector-with-a-long-deployment-nm"
    document["spec"]["runtime"] = "kserve"
    intent = write_intent(tmp_path / "intent.yaml", document)
    path = config(tmp_path, {})
    settings = load_settings(Path(path), environ={})
    rendering = renderer(settings)
    request = build_request(pipeline_config(settings, rendering).targets, document, "production",
                            origin=str(intent))
    with pytest.raises(UserError) as pipeline:
        rendering.check(request)
    code, out, err = run_cli("policy", "check", "--intent", str(intent), "--env", "production",
                             "--config", path)
    assert code == 1, out
    assert "KServe's host name label" in pipeline.value.message
    assert " ".join(pipeline.value.message.split()) in " ".join(err.split())
