"""Shared helpers for the intake tests: captured deliveries, settings, an in-process app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from promoter.service.app import create_app
from promoter.service.queue import JobQueue
from promoter.settings import Settings, load_settings

DATA = Path(__file__).parent / "data"
CAPTURE_SECRET = "fixture-secret-123"  # the secret the captured deliveries were signed with


def capture(name: str) -> dict[str, Any]:
    """A real MLflow delivery: headers, raw body, trigger (see data/PROVENANCE.md)."""
    return json.loads((DATA / "mlflow" / name).read_text())


def databricks_body(name: str) -> bytes:
    return (DATA / "databricks" / name).read_bytes().rstrip(b"\n")


def make_settings(state_dir: Path, **environ: str) -> Settings:
    return load_settings(None, {"PROMOTER_STATE_DIR": str(state_dir), **environ})


class FixedClock:
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


@dataclass
class AppClient:
    """Drives the ASGI app in-process over httpx, synchronously, on one event loop."""

    client: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    queue: JobQueue

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, content=body,
                                                             headers=dict(headers)))

    def get(self, path: str) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(path))


@pytest.fixture
def app_client_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[AppClient] = []

    def make(clock: Any = None, registry: Any = None, restart_reason: Any = None,
             **environ: str) -> AppClient:
        environ.setdefault("PROMOTER_MLFLOW_WEBHOOK_SECRET", CAPTURE_SECRET)
        environ.setdefault("PROMOTER_DATABRICKS_WEBHOOK_SECRET", "databricks-secret")
        settings = make_settings(tmp_path / f"state{len(made)}", **environ)
        queue = JobQueue.open(settings.state_dir)
        app = create_app(settings, queue, registry, clock=clock, restart_reason=restart_reason)
        loop = asyncio.new_event_loop()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://promoter.test")
        made.append(AppClient(client, loop, queue))
        return made[-1]

    yield make
    for app_client in made:
        app_client.loop.run_until_complete(app_client.client.aclose())
        # Close the queue while the loop's worker threads are alive: JobQueue.close() iterates
        # its connection set, which a dying thread's finalizer also edits (a race in queue.py).
        app_client.queue.close()
        app_client.loop.close()
