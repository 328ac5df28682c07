"""A denied promotion's audit entry names the version denied, as every other outcome does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from promoter.core.jobs import Job, JobKey
from promoter.core.pipeline import Ports
from promoter.errors import PolicyDenied
from promoter.service import composition, jobs_handler
from promoter.service.jobs_handler import ANY_VERSION
from tests.core.test_pipeline import (
    INTENT_TAGS,
    MODEL,
    RENDERER,
    SETTINGS,
    CountingImages,
    CountingSigner,
    MemoryLedger,
    MemoryProvider,
    MemoryRegistry,
    MemorySteps,
)


def test_a_denial_is_audited_with_the_version_the_alias_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job names no version (an alias event resolved when it runs): the entry must."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path})
    registry = MemoryRegistry()
    registry.add(MODEL, "4", {**INTENT_TAGS, "validation_status": "failed"})
    registry.set_alias(MODEL, "production", "4")
    ports = Ports(registry, MemoryProvider(), MemoryLedger(), RENDERER,  # type: ignore[arg-type]
                  CountingImages(), CountingSigner())
    monkeypatch.setattr(composition, "ports", lambda _s, _r: ports)
    monkeypatch.setattr(composition, "pipeline_config",
                        lambda _s, _r: SETTINGS.pipeline_config())
    handle = jobs_handler.build_job_handler(settings, registry)  # type: ignore[arg-type]
    now = time.time()
    job = Job(1, JobKey(MODEL, ANY_VERSION, "production", "promote"), "running", 1,
              {"source": "mlflow"}, {}, None, now, now, now, "w", None)
    with pytest.raises(PolicyDenied):
        handle(job, MemorySteps())  # type: ignore[arg-type]
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    [denied] = [entry for entry in entries if entry["event"] == "job.denied"]
    assert denied["version"] == "4" and denied["reasons"]
