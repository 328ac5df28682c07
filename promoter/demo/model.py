"""The demo's model: a small real MLflow pyfunc, registered with its deployment intent.

A transparent fraud score (a logistic curve over the amount) so the demo needs no training
library. Its requirements are what `mlflow models serve` needs on a Python base image
(mlflow-skinny, pandas, numpy, cloudpickle), pinned to this machine's versions.
"""

from __future__ import annotations

import math
import warnings
from importlib.metadata import version as installed

import mlflow.pyfunc

DEMO_MODEL = "Demo Fraud Detector"
EXPERIMENT = "promoter-demo"
INTENT_TAGS = {
    "deploy.owner.team": "demo-team",
    "deploy.owner.costCenter": "cc-demo",
    "deploy.runtime": "deployment",
    "deploy.resources.cpu": "500m",
    "deploy.resources.memory": "1Gi",
    "deploy.scaling.minReplicas": "1",
    "deploy.scaling.maxReplicas": "3",
    "deploy.description": "Demo fraud score: logistic curve over the transaction amount.",
    "validation_status": "passed",
}


# MLflow nags, at class creation, about predict having no type hints: on purpose here, since
# MLflow's list-of-rows hints refuse the DataFrame `mlflow models serve` passes in.
warnings.filterwarnings("ignore", message=".*type hints to the `predict` method",
                        category=UserWarning)


class FraudScore(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else model_input
        return [1.0 / (1.0 + math.exp(-(0.004 * float(row["amount"]) - 2.5))) for row in rows]


def requirements() -> list[str]:
    return [f"{name}=={installed(name)}"
            for name in ("mlflow-skinny", "pandas", "numpy", "cloudpickle")]


def ensure_version(tracking_uri: str, *, new: bool = False) -> tuple[str, bool]:
    """The demo model's version to promote: the newest existing one, or (also with ``new``)
    a newly registered one.

    Returns (version, created). A second demo run reuses what the first registered.
    """
    import cloudpickle
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    existing = client.search_model_versions(f"name = '{DEMO_MODEL}'")
    if existing and not new:
        return str(max(int(found.version) for found in existing)), False
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    # Pickle the model class by value: the serving image has no promoter package.
    cloudpickle.register_pickle_by_value(__import__(__name__, fromlist=["_"]))
    with warnings.catch_warnings(), mlflow.start_run(run_name="demo-fraud-score") as run:
        warnings.simplefilter("ignore")  # MLflow's advice on pickling and signatures
        mlflow.log_params({"slope": 0.004, "offset": -2.5})
        mlflow.log_metrics({"auc": 0.91, "precision_at_1pct": 0.62})
        mlflow.set_tag("mlflow.source.git.commit", "0" * 40)
        mlflow.pyfunc.log_model(name="model", python_model=FraudScore(),
                                pip_requirements=requirements())
    created = mlflow.register_model(f"runs:/{run.info.run_id}/model", DEMO_MODEL)
    for key, value in INTENT_TAGS.items():
        client.set_model_version_tag(DEMO_MODEL, created.version, key, value)
    return str(created.version), True


def promote(tracking_uri: str, version: str, alias: str = "production") -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        DEMO_MODEL, alias, version)


def version_tags(tracking_uri: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri,
                         registry_uri=tracking_uri).get_model_version(DEMO_MODEL, version)
    return dict(found.tags)
