"""The audit trail on disk: chained appends (also from several processes), every tampering
found by verify with the first bad line, private file modes, and a pre-chain trail carried on."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import stat
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from promoter.core.audit_chain import head_of
from promoter.core.gates import GateFacts, StagingFirstGate
from promoter.service.audit import AuditTrail
from promoter.service.audit_file import FileChain


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


def _rehash_last(lines: list[str], change: dict[str, str]) -> list[str]:
    """The last entry edited and its hash recomputed (the hash has no key: anyone can)."""
    import hashlib

    from promoter.core.audit_chain import canonical

    entry = {key: value for key, value in json.loads(lines[-1]).items() if key != "hash"}
    entry.update(change)
    entry["hash"] = hashlib.sha256(canonical(entry)).hexdigest()
    return [*lines[:-1], json.dumps(entry, sort_keys=True)]


def test_a_trail_cut_short_or_edited_at_its_end_stays_broken_after_the_next_append(
        tmp_path: Path) -> None:
    """Appending onto whatever the file ends with, and recording that as the head, sealed
    over the change: `audit verify` passed again. The next entry chains onto the recorded
    head instead, so the break stays where it is."""
    for case in ("cut", "edited"):
        trail = AuditTrail(tmp_path / case)
        fill(trail)
        trail.record("mr.merge_foreign", actor="alice", model="m", env="production")
        lines = trail.path.read_text().splitlines()
        lines = lines[:-1] if case == "cut" else _rehash_last(lines, {"actor": "promoter"})
        trail.path.write_text("\n".join(lines) + "\n")
        assert trail.verify() is not None
        trail.record("job.created", model="m", env="staging", version="9")
        finding = trail.verify()
        assert finding is not None, case
        assert finding.line == len(lines) + 1 if case == "cut" else finding.line >= len(lines)


DEEP = "[" * 100_000 + "]" * 100_000   # deeper than json.loads goes


@pytest.mark.parametrize(("old", "new", "newline"), [
    ('"model": "m"', f'"model": {DEEP}', True),     # json.loads: RecursionError
    ('"model": "m"', f'"model": {DEEP}', False),    # the same, its newline lost too
    ('"seq": 5', '"seq": 1e999', True),             # int(inf): OverflowError
], ids=["deep-nesting", "deep-nesting-no-newline", "infinite-seq"])
def test_an_edit_to_the_last_entry_past_reading_does_not_stop_the_appends(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, old: str, new: str,
        newline: bool) -> None:
    """README: when the trail's end is edited, promoter logs an error but keeps recording.
    Reading back the last entry raised instead, on every append from then on: no job outcome
    or MR event could be recorded again. The next entry chains onto the recorded head."""
    trail = AuditTrail(tmp_path)
    fill(trail, 5)
    head = trail.recorded_head()
    lines = trail.path.read_text().splitlines()
    assert old in lines[-1]
    lines[-1] = lines[-1].replace(old, new)
    trail.path.write_text("\n".join(lines) + ("\n" if newline else ""))
    with caplog.at_level("ERROR", logger="promoter.audit"):
        entry = trail.record("job.created", model="m", env="staging", version="9")
    assert head is not None and entry["prev"] == head.hash and entry["seq"] == head.seq + 1
    assert "not at its recorded head" in caplog.text
    finding = trail.verify()
    assert finding is not None and finding.line == 5   # the edit stays found, at its line
    trail.record("job.created", model="m", env="staging", version="10")  # and again
    assert trail.recorded_head() == head_of(list(trail.entries())[-1])


def test_credentials_in_an_entry_are_masked_before_it_is_sealed(tmp_path: Path) -> None:
    """A reason quoting a URL with its password reached the trail as it was, where no edit can
    take it out without breaking the chain. Masked before sealing, the entry still verifies,
    and an entry sealed before (by an older promoter) is left exactly as it was."""
    trail = AuditTrail(tmp_path)
    secret_url = "https://alice:hunter2@models.example.com/m.tar.gz?X-Amz-Signature=deadbeef"
    older = trail._chain.append({"time": 1.0, "event": "job.denied", "reasons": [secret_url]})
    before = trail.path.read_text()
    entry = trail.record("job.denied", model="m", version="3", env="production",
                         reasons=[f"metric:auc: the version's files at {secret_url!r} …"],
                         detail={"url": secret_url, "nested": [secret_url]}, mr_url=None)
    text = trail.path.read_text()
    assert text.startswith(before) and older["reasons"] == [secret_url]
    written = json.loads(text.splitlines()[-1])
    assert written == entry
    masked = "https://***@models.example.com/m.tar.gz?X-Amz-Signature=***"
    # Inside free text a credential parameter's value runs to the next space (the quote too).
    assert written["reasons"] == [f"metric:auc: the version's files at '{masked} …"]
    assert written["detail"] == {"url": masked, "nested": [masked]}
    assert "hunter2" not in text.split("\n", 1)[1] and "deadbeef" not in text.split("\n", 1)[1]
    assert trail.verify() is None


class _Crash(BaseException):
    """A kill between two writes of an append (raised where the process would die)."""


def crash_before_the_head_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next append dies after writing its entry, before moving audit.head onto it."""
    write_head = FileChain._write_head

    def dies_on_confirming(chain: FileChain, head: object, *, pending: object = None) -> None:
        if pending is None:
            raise _Crash
        write_head(chain, head, pending=pending)  # type: ignore[arg-type]

    monkeypatch.setattr(FileChain, "_write_head", dies_on_confirming)


def crash_an_append(trail: AuditTrail, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """One append of ``trail`` that dies before its head moves (the entry is written)."""
    crash_before_the_head_moves(monkeypatch)
    with pytest.raises(_Crash):
        trail.record("job.done", model="m", env="production", version=version)
    monkeypatch.undo()


def test_an_entry_whose_head_a_crash_did_not_record_is_chained_onto(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head names the entry, then the line is written, then the head moves onto it: a
    crash before the move leaves the trail one entry ahead of its recorded head. That is no
    tampering: verify passes, and the next entry follows it."""
    trail = AuditTrail(tmp_path)
    fill(trail)
    crash_an_append(trail, monkeypatch, "4")
    restarted = AuditTrail(tmp_path)
    assert [e["seq"] for e in restarted.entries()] == [1, 2, 3, 4, 5]
    assert restarted.recorded_head().seq == 4  # type: ignore[union-attr]
    assert restarted.verify() is None
    restarted.record("job.created", model="m", env="staging", version="5")
    assert restarted.verify() is None
    assert [e["seq"] for e in restarted.entries()] == [1, 2, 3, 4, 5, 6]


def forge_after_the_last(trail: AuditTrail, **fields: Any) -> None:
    """Append one well-sealed entry after the last, leaving the recorded head alone (anyone
    can: the hash has no key); ``fields`` replace the forged merge's."""
    from promoter.core.audit_chain import head_of, seal

    last = json.loads(list(trail.lines())[-1])
    forged = seal({"time": last["time"] + 1, "event": "mr.merge", "actor": "gitlab:alice",
                   "model": "m", "env": "production", "version": "666", **fields},
                  head_of(last))
    with trail.path.open("a") as handle:
        handle.write(json.dumps(forged, sort_keys=True) + "\n")


def test_an_entry_appended_without_moving_the_head_is_never_adopted(tmp_path: Path) -> None:
    """It follows the recorded head, as the one entry a crash wrote would: the next append took
    it for that, chained onto it and recorded it as the head, and verify passed again. Only the
    entry the head named as being written is adopted; this one stays reported."""
    trail = AuditTrail(tmp_path)
    fill(trail)
    forge_after_the_last(trail)
    finding = trail.verify()
    assert finding is not None and finding.line == 5 and "without moving it" in finding.problem
    trail.record("job.created", model="m", env="staging", version="5")
    finding = trail.verify()
    assert finding is not None and finding.line == 5 and "inserted" in finding.problem
    assert trail.recorded_head().seq == 5  # type: ignore[union-attr]  # the forgery is not


def crash_as_an_older_promoter_did(trail: AuditTrail) -> None:
    """An append by a promoter from before heads named their pending entry, killed between
    writing its entry and moving audit.head: the trail ends one entry past a head that has no
    ``pending`` key at all."""
    head = json.loads(trail.head_path.read_text())
    trail.record("job.done", actor="test", model="m", env="production", version="old")
    trail.head_path.write_text(json.dumps({"seq": head["seq"], "hash": head["hash"]}))


def test_an_older_promoters_crash_entry_is_adopted_once_after_the_upgrade(
        tmp_path: Path) -> None:
    """That promoter adopted the entry such a crash left; the first one to name pending
    entries reported it for good and forked the chain on its seq. A head without ``pending``
    keeps the old rule until the next append writes a head that names one (null here): from
    then on an entry appended without moving the head is never adopted again."""
    trail = AuditTrail(tmp_path)
    fill(trail)
    crash_as_an_older_promoter_did(trail)
    assert trail.verify() is None
    trail.record("job.created", model="m", env="staging", version="6")
    assert trail.verify() is None
    assert [e["seq"] for e in trail.entries()] == [1, 2, 3, 4, 5, 6]
    assert json.loads(trail.head_path.read_text())["pending"] is None
    forge_after_the_last(trail)
    finding = trail.verify()
    assert finding is not None and finding.line == 7 and "without moving it" in finding.problem


def test_entries_appended_after_a_half_written_line_stay_readable(tmp_path: Path) -> None:
    """An append cut off mid-line (a crash, a full disk) leaves no newline: the next entry was
    written onto the half line, both unreadable, so `audit show`, `audit live` and rollback
    missed it. The half line is ended first; it stays, and verify names it as what it is."""
    trail = AuditTrail(tmp_path)
    fill(trail, 2)
    with trail.path.open("ab") as handle:
        handle.write(b'{"actor":"gitlab:alice","env":"production","ev')
    trail.record("mr.merge", actor="gitlab:alice", model="m", env="production", version="3")
    trail.record("mr.merge", actor="gitlab:bob", model="m", env="production", version="4")
    assert [(e["seq"], e["version"]) for e in trail.entries()] == [
        (1, "1"), (2, "2"), (3, "3"), (4, "4")]
    finding = trail.verify()
    assert finding is not None and finding.line == 3 and "half-written" in finding.problem
    assert trail.recorded_head().seq == 4  # type: ignore[union-attr]


def test_an_entry_that_lost_only_its_newline_is_kept_and_chained_onto(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash (or a full disk) at the pending entry's last byte leaves it whole but without
    its newline. Taken for a half line, it was passed over: the next append chained onto the
    entry before it, a second entry 5 followed, and verify reported an insertion for good.
    It parses, so only its newline is added, and the next entry follows it."""
    trail = AuditTrail(tmp_path)
    fill(trail)
    crash_an_append(trail, monkeypatch, "5")
    trail.path.write_bytes(trail.path.read_bytes().removesuffix(b"\n"))
    restarted = AuditTrail(tmp_path)
    assert restarted.verify() is None
    restarted.record("job.created", model="m", env="staging", version="6")
    assert restarted.verify() is None
    assert [(e["seq"], e["version"]) for e in restarted.entries()] == [
        (1, "1"), (2, "2"), (3, "3"), (4, "4"), (5, "5"), (6, "6")]
    assert restarted.recorded_head().seq == 6  # type: ignore[union-attr]


def append_elsewhere_once_the_head_is_read(monkeypatch: pytest.MonkeyPatch,
                                           state_dir: Path) -> threading.Thread:
    """Right after the reader reads audit.head, another process's handle on the trail (a
    thread here) appends an entry, waiting up to a second for it: the append is done at once
    unless the reader holds the trail's lock. Returns the appender, to join."""
    other_process = AuditTrail(state_dir)  # serve's own handle on the same trail
    appender = threading.Thread(target=other_process.record, args=("job.done",),
                                kwargs={"model": "m", "env": "production", "version": "5"})
    read_head = FileChain._read_head

    def head_then_append(chain: FileChain) -> object:
        head = read_head(chain)
        if threading.current_thread() is not appender and not appender.is_alive():
            appender.start()
            appender.join(1.0)
        return head

    monkeypatch.setattr(FileChain, "_read_head", head_then_append)
    return appender


def test_an_entry_appended_while_verify_reads_is_no_finding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit verify` read the head, then the lines without the lock: an entry another
    process appended in between made the trail longer than the head read, reported as
    tampering (exit 1). The head and the trail's length are read under the lock an append
    takes: the append waits for those (not for the verification), and is past the lines read."""
    trail = AuditTrail(tmp_path)
    fill(trail)
    appender = append_elsewhere_once_the_head_is_read(monkeypatch, tmp_path)
    assert trail.verify() is None
    appender.join(10)
    assert not appender.is_alive()
    monkeypatch.undo()
    assert trail.verify() is None
    assert [e["seq"] for e in trail.entries()] == [1, 2, 3, 4, 5]


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


DAY = 86400.0


def _merge(trail: AuditTrail, when: float, env: str, version: str) -> None:
    with mock.patch("time.time", return_value=when):
        trail.record("mr.merge", model="fraud", name="fraud", env=env, version=version,
                     status="merged")


def test_a_version_that_soaked_in_staging_and_was_replaced_there_may_return_to_production(
        tmp_path: Path) -> None:
    """Rolling production back to version 4 a week after staging moved on is allowed: 4 was
    live in staging for its soak; only a version never live there is denied."""
    trail = AuditTrail(tmp_path)
    _merge(trail, 0, "staging", "4")
    _merge(trail, 2 * DAY, "production", "4")
    _merge(trail, 3 * DAY, "staging", "5")
    _merge(trail, 5 * DAY, "production", "5")
    now = 7 * DAY
    gate = StagingFirstGate("staging", DAY, ("production",))

    def verdict(version: str) -> tuple[bool, str]:
        facts = GateFacts("fraud", version, "production", "models-production", now=now,
                          live_since=lambda env: trail.live_since("fraud", version, env))
        result = gate.evaluate(None, facts)  # type: ignore[arg-type]  # the gate reads facts only
        return result.passed, result.detail

    assert verdict("4") == (True, "live in staging for 7.0 d")
    assert verdict("9")[0] is False and "was never live in staging" in verdict("9")[1]


def test_merging_the_same_version_again_does_not_restart_its_soak(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    _merge(trail, 0, "staging", "6")
    _merge(trail, DAY / 2, "staging", "6")    # the same version re-rendered (a config change)
    assert trail.live_since("fraud", "6", "staging") == 0
    with mock.patch("time.time", return_value=DAY):
        assert trail.live_now_since("fraud", "6", "staging") == 0


def _soak_verdict(trail: AuditTrail, version: str, now: float) -> tuple[bool, str]:
    """The staging-first gate's verdict on ``version`` for production, read from ``trail``
    as the pipeline and `policy check` read it."""
    gate = StagingFirstGate("staging", DAY, ("production",))
    facts = GateFacts("fraud", version, "production", "models-production", now=now,
                      live_since=lambda env: trail.live_since("fraud", version, env),
                      history_doubt=trail.doubt)
    result = gate.evaluate(None, facts)  # type: ignore[arg-type]  # the gate reads facts only
    return result.passed, result.detail


def test_a_staging_merge_appended_by_hand_does_not_soak_a_version_for_production(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A well-sealed merge of version 7 into staging a week ago, appended to audit.jsonl by
    hand: the soak clock read every line, so 7 went to production without ever running in
    staging. Entries from the trail's first bad line on never count (nor do promoter's own
    after it, until the trail is repaired): denied, the reason saying why, the break logged."""
    trail = AuditTrail(tmp_path)
    _merge(trail, 0, "staging", "6")
    forge_after_the_last(trail, time=0, model="fraud", name="fraud", env="staging",
                         version="7", status="merged")
    _merge(trail, DAY, "staging", "8")      # promoter's own, after the forgery
    assert [e.get("version") for e in trail.entries()] == ["6", "7", "8"]

    with caplog.at_level("WARNING", logger="promoter.audit"):
        passed, detail = _soak_verdict(trail, "7", now=7 * DAY)
    assert not passed and "version 7 was never live in staging" in detail
    assert "the audit trail does not verify from line 2" in detail
    assert f"{trail.path} does not verify from line 2" in caplog.text
    assert _soak_verdict(trail, "8", now=7 * DAY)[0] is False   # fail closed
    assert _soak_verdict(trail, "6", now=7 * DAY) == (True, "live in staging for 7.0 d")


def test_a_merge_appended_by_hand_is_not_what_runs_now(tmp_path: Path) -> None:
    """GC's idle TTL and `status` ask what is live now: a forged merge past the first bad line
    neither replaces what promoter deployed nor starts an idle clock of its own."""
    trail = AuditTrail(tmp_path)
    _merge(trail, 0, "staging", "6")
    forge_after_the_last(trail, time=1, model="fraud", env="staging", version="7",
                         status="merged")
    with mock.patch("time.time", return_value=DAY):
        assert {model: live.version for model, live in trail.live_now("staging").items()} == {
            "fraud": "6"}
        assert trail.live_now_since("fraud", "7", "staging") is None
        assert trail.live_now_since("fraud", "6", "staging") == 0


def test_an_interrupted_append_does_not_set_aside_what_follows_it(tmp_path: Path) -> None:
    """A crash or a full disk mid-append leaves a half-written line, which the next append
    ends and passes over. Deciding only from what verifies would have ignored every entry
    after it for good, the soak gate denying every production promotion from then on: the
    half line is passed over when the chain runs on around it. A forged entry after it still
    does not count, and `audit verify` still names the half line."""
    trail = AuditTrail(tmp_path)
    _merge(trail, 0, "staging", "6")
    with trail.path.open("ab") as handle:
        handle.write(b'{"actor":"gitlab:alice","env":"staging","ev')
    _merge(trail, DAY, "staging", "7")
    assert _soak_verdict(trail, "7", now=8 * DAY) == (True, "live in staging for 7.0 d")
    finding = trail.verify()
    assert finding is not None and finding.line == 2 and "half-written" in finding.problem
    assert trail.doubt() is None

    forge_after_the_last(trail, time=0, model="fraud", name="fraud", env="staging",
                         version="8", status="merged")
    passed, detail = _soak_verdict(trail, "8", now=8 * DAY)
    assert not passed and "the audit trail does not verify from line 4" in detail
