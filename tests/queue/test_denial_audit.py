"""A denied promotion's audit entry names the version denied, as every other outcome does."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from promoter.core.jobs import Job, JobKey
from promoter.core.pipeline import Ports
from promoter.errors import PolicyDenied
from promoter.service import composition, jobs_handler
from promoter.service.audit import AuditTrail
from promoter.service.jobs_handler import ANY_VERSION
from promoter.settings import Settings
from tests.core.test_gates import settings_with
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


def deny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: MemoryRegistry,
         settings: Settings = SETTINGS) -> dict[str, Any]:
    """The job.denied entry a job handler writes for the version production's alias names."""
    settings = settings.model_copy(update={"state_dir": tmp_path})
    ports = Ports(registry, MemoryProvider(), MemoryLedger(), RENDERER,  # type: ignore[arg-type]
                  CountingImages(), CountingSigner())
    monkeypatch.setattr(composition, "ports", lambda _s, _r: ports)
    monkeypatch.setattr(composition, "pipeline_config",
                        lambda _s, _r: settings.pipeline_config())
    handle = jobs_handler.build_job_handler(settings, registry)  # type: ignore[arg-type]
    now = time.time()
    job = Job(1, JobKey(MODEL, ANY_VERSION, "production", "promote"), "running", 1,
              {"source": "mlflow"}, {}, None, now, now, now, "w", None)
    with pytest.raises(PolicyDenied):
        handle(job, MemorySteps())  # type: ignore[arg-type]
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    [denied] = [entry for entry in entries if entry["event"] == "job.denied"]
    assert AuditTrail(tmp_path).verify() is None
    return denied


def test_a_denial_is_audited_with_the_version_the_alias_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job names no version (an alias event resolved when it runs): the entry must."""
    registry = MemoryRegistry()
    registry.add(MODEL, "4", {**INTENT_TAGS, "validation_status": "failed"})
    registry.set_alias(MODEL, "production", "4")
    denied = deny(tmp_path, monkeypatch, registry)
    assert denied["version"] == "4" and denied["reasons"]


def test_a_denial_quoting_the_versions_source_seals_no_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version registered from a URL with a password and a presigned signature, its run not
    the files' origin: the metric gate's denial quoted the source, and job.denied sealed it."""
    registry = MemoryRegistry()
    registry.add(MODEL, "4")
    registry.set_alias(MODEL, "production", "4")
    registry.versions[(MODEL, "4")] = dataclasses.replace(
        registry.versions[(MODEL, "4")],
        source="https://alice:hunter2@models.example.com/m.tar.gz?X-Amz-Signature=deadbeef")
    denied = deny(tmp_path, monkeypatch, registry,
                  settings_with({"gates": [{"rule": "metric", "check": "auc >= 0.9"}]}))
    [reason] = denied["reasons"]
    assert "files at 'https://***@models.example.com/m.tar.gz?X-Amz-Signature=***" in reason
    trail = (tmp_path / "audit.jsonl").read_text()
    assert "hunter2" not in trail and "deadbeef" not in trail
    tag = registry.tags(MODEL, "4")["promoter.production.reason"]
    assert "files at 'https://***@models.example.com/m.tar.gz?X-Amz-Signature=***'" in tag
