"""The audit trail on disk: chained appends (also from several processes), every tampering
found by verify with the first bad line, private file modes, and a pre-chain trail carried on."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import stat
from pathlib import Path

from promoter.service.audit import AuditTrail


def fill(trail: AuditTrail, count: int = 4) -> None:
    for index in range(count):
        trail.record("job.created", actor="webhook:mlflow", inputs={"intent": f"sha256:{index}"},
                     model="m", env="production", version=str(index + 1))


def test_appends_chain_and_verify(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    fill(trail)
    entries = list(trail.entries())
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert entries[0]["actor"] == "webhook:mlflow" and entries[0]["inputs"] == {
        "intent": "sha256:0"}
    assert trail.verify() is None
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_editing_a_line_is_found(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    fill(trail)
    lines = trail.path.read_text().splitlines()
    lines[1] = lines[1].replace('"version":"2"', '"version":"9"').replace(
        '"version": "2"', '"version": "9"')
    trail.path.write_text("\n".join(lines) + "\n")
    finding = trail.verify()
    assert finding is not None and finding.line == 2


def test_truncating_the_trail_is_found_against_the_recorded_head(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    fill(trail)
    lines = trail.path.read_text().splitlines()
    trail.path.write_text("\n".join(lines[:2]) + "\n")
    finding = trail.verify()
    assert finding is not None and finding.line == 3 and "cut off" in finding.problem


def _append(state_dir: str, worker: int) -> None:
    trail = AuditTrail(Path(state_dir))
    for index in range(25):
        trail.record("mr.approved", actor=f"worker-{worker}", index=index)


def test_concurrent_processes_keep_one_chain(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append, args=(str(tmp_path), n)) for n in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    trail = AuditTrail(tmp_path)
    assert len(list(trail.entries())) == 100 and trail.verify() is None


def test_a_trail_from_before_chaining_is_carried_on(tmp_path: Path) -> None:
    old = [json.dumps({"time": 1.0, "event": "job.created", "model": "m"}),
           json.dumps({"time": 2.0, "event": "mr.merge", "model": "m"})]
    (tmp_path / "audit.jsonl").write_text("\n".join(old) + "\n")
    trail = AuditTrail(tmp_path)
    trail.record("job.created", model="m")
    assert trail.verify() is None
    lines = trail.path.read_text().splitlines()
    lines[0] = lines[0].replace("job.created", "job.deleted")   # the old part is bound too
    trail.path.write_text("\n".join(lines) + "\n")
    finding = trail.verify()
    assert finding is not None and finding.line == 3
