"""Create real model versions in a test MLflow server (runs, params, metrics, MLmodel, intent)."""

from __future__ import annotations

from typing import Any

GIT_COMMIT = "3f2a9c1d0b7e4a5f6c8d9e0a1b2c3d4e5f6a7b8c"


def create_version(client: Any, name: str, *, tags: dict[str, str] | None = None,
                   intent_yaml: str | None = None, auc: float = 0.91) -> str:
    """A registered model version backed by a finished run with a real MLmodel file."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    experiment = client.get_experiment_by_name("promoter-tests")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("promoter-tests"))
    run = client.create_run(experiment_id, tags={"mlflow.source.git.commit": GIT_COMMIT})
    run_id = run.info.run_id
    client.log_param(run_id, "C", "0.5")
    client.log_metric(run_id, "auc", auc)
    signature = ModelSignature(inputs=Schema([ColSpec("double", "amount"),
                                              ColSpec("long", "merchant")]),
                               outputs=Schema([ColSpec("double", "score")]))
    mlmodel = Model(artifact_path="model", run_id=run_id, signature=signature)
    mlmodel.add_flavor("python_function", loader_module="mlflow.sklearn", python_version="3.11")
    client.log_text(run_id, mlmodel.to_yaml(), "model/MLmodel")
    if intent_yaml is not None:
        client.log_text(run_id, intent_yaml, "model/modeldeployment.yaml")
    client.set_terminated(run_id)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                          run_id=run_id, tags=tags or {})
    return str(version.version)
