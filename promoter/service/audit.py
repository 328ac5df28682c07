"""The audit trail: one JSON object per line in ``<state_dir>/audit.jsonl``, fsynced.

Every decision promoter takes or observes lands here: job outcomes (promoted, denied, failed),
merge-request events (approved, merged, closed) and write-backs that could not be made. Lines
are append-only and never hold secrets (only names, versions, URLs, reasons).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from promoter.core.live_history import live_at

FILENAME = "audit.jsonl"
_lock = threading.Lock()


class AuditTrail:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILENAME

    def record(self, event: str, **fields: Any) -> None:
        entry = {"time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with _lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def live_since(self, model: str, version: str, env: str) -> float | None:
        """When ``version`` became live in ``env``, if it still is (the DeploymentHistory port)."""
        live = live_at(self.entries(), env, time.time(), model).get(model)
        return live.since if live is not None and live.version == version else None

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
