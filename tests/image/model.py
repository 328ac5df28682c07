"""A small real scikit-learn MLflow model for image tests.

CI cost: installing the model's full requirements (mlflow, scikit-learn, numpy, scipy …) into
the dependency layer downloads hundreds of MB on every fresh machine. The tests therefore
rewrite requirements.txt to one small real wheel (threadpoolctl, a scikit-learn dependency),
so the dependency layer is real but small, and serve the unpacked model with this machine's
Python (which has mlflow and scikit-learn) with the unpacked dependency path on PYTHONPATH.
"""

from __future__ import annotations

from pathlib import Path

SMALL_REQUIREMENTS = "threadpoolctl==3.5.0\n"
SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def save_model(path: Path, *, seed: int = 0, requirements: str = SMALL_REQUIREMENTS) -> Path:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300, random_state=seed, C=1.0 + seed).fit(
        features, target)
    mlflow.sklearn.save_model(model, str(path), serialization_format="pickle")
    (path / "requirements.txt").write_text(requirements, encoding="utf-8")
    return path


def register_logged_model(work: Path, tracking: str, experiment: str, name: str) -> str:
    """Version 1 of ``name`` in the registry at ``tracking``: a small model (no dependency
    layer) logged under ``work``/art in a run of a new ``experiment``; the run id."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    model = save_model(work / "model", requirements="")
    with _use_tracking_uri(tracking):  # scoped: other tests keep their own tracking URI
        experiment_id = mlflow.create_experiment(experiment,
                                                 artifact_location=(work / "art").as_uri())
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifacts(str(model), "model")
        mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    return str(run.info.run_id)


def predictions(path: Path) -> list[int]:
    import mlflow.pyfunc

    return [int(x) for x in mlflow.pyfunc.load_model(str(path)).predict(SAMPLE)]
