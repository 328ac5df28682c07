"""promoter's one MLflow adapter: the only code that imports mlflow.

``MlflowRegistry`` reads the registry, downloads model files, writes tags back and manages the
webhook over one ``MlflowClient``; every failure goes through one translator (``errors``).
MLflow's process-wide client settings (``client.CLIENT_SETTINGS``) are applied by the
composition root, never here.
"""

from promoter.adapters.mlflow.client import CLIENT_SETTINGS
from promoter.adapters.mlflow.registry import MlflowRegistry

__all__ = ["CLIENT_SETTINGS", "MlflowRegistry"]
