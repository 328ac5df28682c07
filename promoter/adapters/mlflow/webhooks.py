"""The MLflow webhook that points at `promoter serve` (`promoter hooks register|list`)."""

from __future__ import annotations

from typing import Any

from promoter.adapters.mlflow.client import Connection, pages

PAGE = 100


class Webhooks:
    def __init__(self, connection: Connection) -> None:
        self._mlflow = connection

    def ensure(self, name: str, url: str, events: list[str], secret: str) -> tuple[str, bool]:
        """Create the webhook, or update the one with this name or URL. → (id, created)."""
        wanted: list[Any] = list(events)  # mlflow types these as a Literal of its event names
        client = self._mlflow.client
        existing = [hook for hook in self.list() if hook["name"] == name or hook["url"] == url]
        if existing:
            hook_id = existing[0]["id"]
            self._mlflow.call("update the MLflow webhook", lambda: client.update_webhook(
                hook_id, name=name, url=url, events=wanted, secret=secret, status="ACTIVE"))
            return hook_id, False
        created = self._mlflow.call("create the MLflow webhook", lambda: client.create_webhook(
            name=name, url=url, events=wanted, secret=secret))
        return str(created.webhook_id), True

    def list(self) -> list[dict[str, Any]]:
        client = self._mlflow.client
        return [{"id": str(hook.webhook_id), "name": hook.name, "url": hook.url,
                 "events": sorted(str(event) for event in hook.events),
                 "status": str(hook.status)}
                for hook in pages(self._mlflow, "list MLflow webhooks",
                                  lambda token: client.list_webhooks(max_results=PAGE,
                                                                     page_token=token))]

