"""The MLflow webhook that points at `promoter serve` (`promoter hooks register|list`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from promoter.adapters.mlflow.client import Connection, pages
from promoter.errors import PermanentError, UserError

PAGE = 100
T = TypeVar("T")
_HINT = ("check --name and --url: an http(s) URL MLflow's server can reach "
         "(…/webhooks/mlflow on `promoter serve`)")


class Webhooks:
    def __init__(self, connection: Connection) -> None:
        self._mlflow = connection

    def ensure(self, name: str, url: str, events: list[str], secret: str) -> tuple[str, bool]:
        """Create the webhook, or update the one with this name or URL. → (id, created)."""
        wanted: list[Any] = list(events)  # mlflow types these as a Literal of its event names
        client = self._mlflow.client
        hooks = self.list()
        # The one with this name first; else the one sending to this URL.
        matches = [hook for hook in hooks if hook["name"] == name] + \
            [hook for hook in hooks if hook["url"] == url and hook["name"] != name]
        if len(matches) > 1:
            # Updating one would leave the other sending every event too (or two of one name).
            listed = "; ".join(f"{hook['id']} (name {hook['name']!r}, {hook['url']})"
                               for hook in matches)
            raise UserError(f"MLflow holds more than one webhook with name {name!r} or URL "
                            f"{url}: {listed}; updating one would leave the other active",
                            hint="delete the ones not wanted in MLflow "
                                 "(MlflowClient().delete_webhook(ID)), then register again")
        if matches:
            hook_id = matches[0]["id"]
            self._call("update the MLflow webhook", lambda: client.update_webhook(
                hook_id, name=name, url=url, events=wanted, secret=secret, status="ACTIVE"))
            return hook_id, False
        created = self._call("create the MLflow webhook", lambda: client.create_webhook(
            name=name, url=url, events=wanted, secret=secret))
        return str(created.webhook_id), True

    def _call(self, doing: str, action: Callable[[], T]) -> T:
        """An MLflow call whose refusal is about the webhook asked for, not about a model."""
        try:
            return self._mlflow.call(doing, action)
        except PermanentError as exc:
            raise PermanentError(exc.message, hint=_HINT) from None

    def list(self) -> list[dict[str, Any]]:
        client = self._mlflow.client
        return [{"id": str(hook.webhook_id), "name": hook.name, "url": hook.url,
                 "events": sorted(str(event) for event in hook.events),
                 "status": str(hook.status)}
                for hook in pages(self._mlflow, "list MLflow webhooks",
                                  lambda token: client.list_webhooks(max_results=PAGE,
                                                                     page_token=token))]

