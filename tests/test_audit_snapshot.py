"""A snapshot of the file trail (audit_file.FileChain.snapshot) against appends meanwhile.

Every decision read verifies the whole chain inside a snapshot. Holding the trail's shared lock
for all of it kept every append (each Argo CD status, MR outcome, job step) waiting for the
verification; the lock is now held only while the head and the trail's length are read."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from promoter.core.audit_chain import verify
from promoter.service.audit import AuditTrail, ChainSnapshot


def fill(trail: AuditTrail, count: int) -> None:
    for index in range(count):
        trail.record("job.created", actor="webhook:mlflow", model="m", env="production",
                     version=str(index + 1))


@pytest.fixture
def append_from_another_process() -> Iterator[Callable[[Path], threading.Thread]]:
    """An append through another handle on the trail (serve's, a thread here), given a few
    seconds: it finishes at once unless the snapshot being read holds the trail's lock (then
    it finishes once the snapshot is done, and is waited for before the test ends)."""
    appenders: list[threading.Thread] = []

    def append(state_dir: Path) -> threading.Thread:
        other_process = AuditTrail(state_dir)
        appender = threading.Thread(target=other_process.record, args=("job.done",),
                                    kwargs={"model": "m", "env": "production", "version": "9"})
        appenders.append(appender)
        appender.start()
        appender.join(5.0)
        return appender

    yield append
    for appender in appenders:
        appender.join(30.0)


Appender = Callable[[Path], threading.Thread]


def test_an_append_is_not_kept_waiting_while_a_snapshot_is_read(
        tmp_path: Path, append_from_another_process: Appender) -> None:
    """The snapshot is the trail as of its start: the entry appended while it is read is in
    neither its lines nor its head, and it still verifies; the next snapshot has the entry."""
    trail = AuditTrail(tmp_path)
    fill(trail, 4)
    seen: dict[str, Any] = {}

    def reader(snapshot: ChainSnapshot) -> None:
        seen["before"] = list(snapshot.lines())
        appender = append_from_another_process(tmp_path)
        seen["appended"] = not appender.is_alive()
        seen["after"] = list(snapshot.lines())  # read again, after the append
        seen["head"], seen["finding"] = snapshot.head, verify(
            snapshot.lines(), snapshot.head, snapshot.pending)

    trail.snapshot(reader)
    assert seen["appended"], "the append waited for the snapshot's reader"
    assert [json.loads(line)["seq"] for line in seen["after"]] == [1, 2, 3, 4]
    assert seen["after"] == seen["before"]
    assert seen["head"].seq == 4 and seen["finding"] is None
    assert trail.verify() is None
    assert [e["seq"] for e in trail.entries()] == [1, 2, 3, 4, 5]
    assert trail.recorded_head().seq == 5  # type: ignore[union-attr]


def test_a_decision_read_does_not_keep_an_append_waiting(
        tmp_path: Path, append_from_another_process: Appender) -> None:
    """``verified`` (the soak gate, GC, status, rollback) folds the entries inside a snapshot:
    an append made meanwhile completes, and is not among the entries folded."""
    trail = AuditTrail(tmp_path)
    fill(trail, 3)
    appended: list[bool] = []

    def reader(entries: Any) -> list[int]:
        appended.append(not append_from_another_process(tmp_path).is_alive())
        return [entry["seq"] for entry in entries]

    assert trail.verified(reader) == [1, 2, 3]
    assert appended == [True], "the append waited for the decision read"
    assert trail.verified(lambda entries: [entry["seq"] for entry in entries]) == [1, 2, 3, 4]


def test_a_snapshot_keeps_a_half_written_last_line_as_it_was(
        tmp_path: Path, append_from_another_process: Appender) -> None:
    """An append meanwhile ends a trail's half-written last line with a newline and writes its
    entry after it: the snapshot still reads the half line exactly as it was (a multi-byte
    character cut in two included), and verify finds what it found before the append."""
    trail = AuditTrail(tmp_path)
    fill(trail, 2)
    with trail.path.open("ab") as handle:
        handle.write('{"actor":"gitlab:é'.encode()[:-1])  # cut inside the "é"
    seen: dict[str, Any] = {}

    def reader(snapshot: ChainSnapshot) -> None:
        seen["before"] = (list(snapshot.lines()), verify(snapshot.lines(), snapshot.head,
                                                         snapshot.pending))
        seen["appended"] = not append_from_another_process(tmp_path).is_alive()
        seen["after"] = (list(snapshot.lines()), verify(snapshot.lines(), snapshot.head,
                                                        snapshot.pending))

    trail.snapshot(reader)
    assert seen["appended"], "the append waited for the snapshot's reader"
    lines, finding = seen["after"]
    assert seen["after"] == seen["before"]
    assert len(lines) == 3 and lines[-1] == '{"actor":"gitlab:\ufffd'
    assert finding is not None and finding.line == 3 and "half-written" in finding.problem
    assert [e["seq"] for e in trail.entries()] == [1, 2, 3]
