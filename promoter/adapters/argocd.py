"""Argo CD ``Application`` objects through the Kubernetes API (the ``kubernetes`` client).

For `promoter status`: list (and watch) the Applications promoter's ApplicationSet made, in
Argo CD's namespace. Credentials come from a kubeconfig (``argocd.kubeconfig``, else
``$KUBECONFIG``, else ``~/.kube/config``) or, inside a pod, the service account. Client errors
become promoter's: 401/403 and a missing kubeconfig are ConfigError (the user fixes access),
connection failures and 5xx are TransientError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promoter.errors import ConfigError, TransientError, UserError
from promoter.ports.clusters import WatchExpired

if TYPE_CHECKING:
    from promoter.settings import Settings

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "applications"


def label_selector(labels: Mapping[str, str | None]) -> str:
    """``key=value`` for set values, ``key`` (exists) for None."""
    return ",".join(key if value is None else f"{key}={value}"
                    for key, value in sorted(labels.items()))


class ArgoCDApplications:
    def __init__(self, api_client: Any, namespace: str, *, timeout_seconds: float = 10) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self._timeout = timeout_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> ArgoCDApplications:
        import kubernetes

        client: Any = kubernetes.client   # the client library is untyped
        config: Any = kubernetes.config
        argocd = settings.argocd
        path = argocd.kubeconfig or (Path(os.environ["KUBECONFIG"])
                                     if os.environ.get("KUBECONFIG") else None)
        default = Path("~/.kube/config").expanduser()
        try:
            if path is not None or default.exists():
                api_client = config.new_client_from_config(
                    config_file=str(path or default), context=argocd.context)
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
        except config.ConfigException as exc:
            raise ConfigError(f"cannot load Kubernetes credentials: {exc}",
                              hint="set argocd.kubeconfig or KUBECONFIG, or run in a pod with "
                                   "a service account that may read applications.argoproj.io")\
                from None
        return cls(api_client, argocd.namespace, timeout_seconds=argocd.status_timeout_seconds)

    def list(self, labels: Mapping[str, str | None]) -> tuple[list[dict[str, Any]], str | None]:
        """The matching Applications and the list's resourceVersion (to watch from)."""
        answer = self._call(lambda: self._api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, label_selector=label_selector(labels),
            _request_timeout=self._timeout))
        items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
        return items, (answer.get("metadata") or {}).get("resourceVersion")

    def watch(self, labels: Mapping[str, str | None], resource_version: str | None,
              seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(ADDED|MODIFIED|DELETED, Application) until the server ends the watch."""
        import kubernetes.watch

        watcher: Any = kubernetes.watch.Watch
        stream = watcher().stream(
            self._api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
            label_selector=label_selector(labels), resource_version=resource_version,
            timeout_seconds=seconds, allow_watch_bookmarks=False)
        events = iter(stream)
        while True:
            event = self._call(lambda: next(events, None))
            if event is None:
                return
            kind, obj = event.get("type"), event.get("object")
            if kind == "ERROR" and (obj or {}).get("code") == 410:
                raise WatchExpired(str((obj or {}).get("message"))[:200])
            if kind == "ERROR":
                raise TransientError(f"the Kubernetes watch ended with an error: "
                                     f"{str((obj or {}).get('message'))[:200]}")
            if isinstance(obj, dict) and kind in ("ADDED", "MODIFIED", "DELETED"):
                yield kind, obj

    def _call(self, call: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as exc:
            status = exc.status or 0
            where = f"applications.{GROUP} in namespace {self.namespace}"
            if status in (401, 403):
                raise ConfigError(f"the Kubernetes API refused to list {where} ({status})",
                                  hint="grant get/list/watch on applications.argoproj.io") \
                    from None
            if status == 410:  # the client turns a watch's 410 ERROR event into this
                raise WatchExpired(f"resourceVersion expired: {exc.reason}") from None
            if status == 404:
                raise UserError(f"no {where}: is Argo CD installed there?",
                                hint="set argocd.namespace") from None
            raise TransientError(f"the Kubernetes API answered {status} for {where}") from None
        except (HTTPError, OSError) as exc:
            raise TransientError(f"cannot reach the Kubernetes API: {exc}") from None
