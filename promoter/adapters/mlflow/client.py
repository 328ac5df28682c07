"""The MLflow connection every part of the adapter shares: one ``MlflowClient`` per adapter.

Nothing here reads or changes ``os.environ``. MLflow's HTTP client takes its retry count and
timeout (and MLflow its telemetry switch) only from process environment variables;
``CLIENT_SETTINGS`` names the values promoter wants, and the composition root applies them once
per process before building the adapter (``promoter.service.composition``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from promoter.adapters.mlflow.errors import calling
from promoter.errors import UserError
from promoter.redaction import without_url_userinfo

T = TypeVar("T")

# MLflow's client retries for minutes by default (7 retries, exponential backoff, 120 s
# timeout); one retry and 10 s make an outage fail fast so the job queue's backoff takes over.
# MLflow 3 also reports usage events from every client process to its maintainers' endpoint;
# promoter's processes talk only to the services they are configured with, so it is off.
# Defaults only: a value the operator exported wins.
CLIENT_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_DISABLE_TELEMETRY": "true"}


class Connection:
    """A tracking server: its ``MlflowClient`` (registry on the same server) and ``call``."""

    def __init__(self, tracking_uri: str | None) -> None:
        if not tracking_uri:
            raise UserError("no MLflow tracking URI is configured",
                            hint="set MLFLOW_TRACKING_URI or mlflow.tracking_uri in promoter.yaml")
        from mlflow import MlflowClient

        self.uri = tracking_uri
        self.where = without_url_userinfo(tracking_uri)
        self.client: Any = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def call(self, doing: str, action: Callable[[], T]) -> T:
        return calling(doing, self.where, action)


def pages(mlflow: Connection, doing: str, fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of a paged MLflow listing, one page (one call) at a time."""
    token: str | None = None
    for _ in range(100_000):  # bounded: a registry of 100M entries is not expected
        page = mlflow.call(doing, functools.partial(fetch, token))
        yield from page
        token = page.token
        if not token:
            return
