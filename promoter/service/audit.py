"""The audit trail: one JSON object per line in ``<state_dir>/audit.jsonl``, fsynced.

Every decision promoter takes or observes lands here: job outcomes (promoted, denied, failed),
merge-request events (approved, merged, closed) and write-backs that could not be made. Lines
are append-only and never hold secrets (only names, versions, URLs, reasons); the file is
still the owner's only (0600, in a 0700 state directory): it maps models to MRs and people.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from promoter.state.db import FILE_MODE, ensure_state_dir

FILENAME = "audit.jsonl"
_lock = threading.Lock()


class AuditTrail:
    def __init__(self, state_dir: Path) -> None:
        self.path = ensure_state_dir(state_dir) / FILENAME

    def record(self, event: str, **fields: Any) -> None:
        entry = {"time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with _lock, open(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE),
                         "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
