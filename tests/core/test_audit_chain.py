"""The audit hash chain: every way of tampering with the trail is found, at the right line."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator

import pytest

from promoter.core.audit_chain import (
    EMPTY,
    UNNAMED,
    Head,
    chain_onto,
    head_of,
    seal,
    settled_head,
    verify,
)
from promoter.core.live_history import first_live, live_at, live_versions, previous_live


def trail(count: int = 5) -> list[str]:
    head, lines = EMPTY, []
    for index in range(count):
        entry = seal({"time": 1000.0 + index, "event": "job.created", "model": "m",
                      "version": str(index + 1), "actor": "webhook:mlflow"}, head)
        head = head_of(entry)
        lines.append(json.dumps(entry, sort_keys=True))
    return lines


def recorded(lines: list[str]) -> Head:
    return head_of(json.loads(lines[-1]))


def test_an_untouched_trail_verifies() -> None:
    lines = trail()
    assert verify(lines, recorded(lines)) is None
    assert verify([], EMPTY) is None


def test_an_edited_entry_is_found_at_its_line() -> None:
    lines = trail()
    entry = json.loads(lines[2])
    entry["version"] = "99"
    lines[2] = json.dumps(entry)
    finding = verify(lines)
    assert finding is not None and finding.line == 3 and "edited" in finding.problem


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    lines = trail()
    entry = json.loads(lines[2])
    entry["version"] = "99"
    lines[2] = json.dumps(seal(entry, Head(entry["seq"] - 1, entry["prev"])))
    finding = verify(lines)
    assert finding is not None and finding.line == 4 and "does not follow" in finding.problem


@pytest.mark.parametrize(("tamper", "line"), [
    (lambda lines: lines.pop(1), 2),                                     # deleted
    (lambda lines: lines.insert(2, lines[0]), 3),                        # inserted (a copy)
    (lambda lines: lines.__setitem__(slice(1, 3), [lines[2], lines[1]]), 2),   # reordered
])
def test_deleted_inserted_and_reordered_entries_are_found(tamper: object, line: int) -> None:
    lines = trail()
    tamper(lines)  # type: ignore[operator]
    finding = verify(lines)
    assert finding is not None and finding.line == line


def test_a_truncated_trail_is_found_against_the_recorded_head() -> None:
    lines = trail()
    head = recorded(lines)
    finding = verify(lines[:3], head)
    assert finding is not None and finding.line == 4 and "cut off" in finding.problem


def test_only_the_entry_the_head_named_as_pending_may_follow_it() -> None:
    """One entry past the recorded head is what a crash between writing an entry and moving
    the head leaves, and what someone appending a sealed entry leaves: only the first was
    named in the head before it was written."""
    lines = trail()
    before, last = head_of(json.loads(lines[-2])), recorded(lines)
    assert verify(lines, before, pending=last) is None
    assert settled_head(lines, before, last) == last
    assert chain_onto(last, json.loads(lines[-1]), before, last) == last
    for pending in (None, Head(last.seq, "ab" * 32)):
        finding = verify(lines, before, pending)
        assert finding is not None and finding.line == 5 and "without moving" in finding.problem
        assert settled_head(lines, before, pending) == before
        assert chain_onto(last, json.loads(lines[-1]), before, pending) == before


def test_a_head_from_before_pending_entries_were_named_adopts_the_entry_after_it() -> None:
    """An older promoter wrote the entry, then the head, and named nothing: the one entry that
    chains onto such a head (``UNNAMED``) is taken for a crash's, as that promoter took it;
    one that does not chain onto it is still found."""
    lines = trail()
    before, last = head_of(json.loads(lines[-2])), recorded(lines)
    assert verify(lines, before, UNNAMED) is None
    assert settled_head(lines, before, UNNAMED) == last
    assert chain_onto(last, json.loads(lines[-1]), before, UNNAMED) == last
    older = head_of(json.loads(lines[-3]))
    finding = verify(lines, older, UNNAMED)
    assert finding is not None and "without moving" in finding.problem
    assert chain_onto(last, json.loads(lines[-1]), older, UNNAMED) == older


def test_an_entry_inserted_before_the_next_is_named() -> None:
    lines = trail()
    forged = seal({"time": 1.0, "event": "mr.merge"}, head_of(json.loads(lines[2])))
    lines.insert(3, json.dumps(forged))
    finding = verify(lines, recorded(lines[:3] + lines[4:]))
    assert finding is not None and finding.line == 4 and "inserted" in finding.problem


def test_a_chained_trail_without_a_recorded_head_is_a_finding() -> None:
    """Cut short and the head deleted: the chain alone cannot tell, so verify says so."""
    lines = trail()
    finding = verify(lines[:3])
    assert finding is not None and finding.line == 4
    assert "no chain head is recorded" in finding.problem


def test_a_key_written_twice_is_found() -> None:
    """The hash covers the parsed entry (json keeps the last key), so a first "event" could be
    put in front unnoticed by the hash and shown by a reader that keeps the first."""
    lines = trail()
    lines[1] = lines[1].replace("{", '{"event": "job.promoted", ', 1)
    finding = verify(lines, recorded(lines))
    assert finding is not None and finding.line == 2
    assert "the key 'event' appears twice" in finding.problem


def test_unchained_lines_are_accepted_only_before_the_first_chained_entry() -> None:
    old = [json.dumps({"time": 1.0, "event": "job.created", "model": "m"})]
    assert verify([]) is None                           # nothing written yet
    # Alone and without a head, unchained lines cannot be told from a stripped chain.
    alone = verify(old)
    assert alone is not None and alone.line == 1 and "their chain was stripped" in alone.problem
    lines = trail()
    stripped = {k: v for k, v in json.loads(lines[2]).items()
                if k not in ("hash", "prev", "seq")}
    lines[2] = json.dumps(stripped)
    finding = verify(lines, recorded(lines))
    assert finding is not None and finding.line == 3
    assert "an entry without a hash after chained entries" in finding.problem
    dechained = [json.dumps({k: v for k, v in json.loads(line).items()
                             if k not in ("hash", "prev", "seq")}) for line in trail()]
    finding = verify(dechained, recorded(trail()))
    assert finding is not None and "no chained entry but 5 were recorded" in finding.problem


def test_a_line_cut_in_the_middle_is_found() -> None:
    lines = trail()
    lines[-1] = lines[-1][:20]
    finding = verify(lines)
    assert finding is not None and finding.line == 5


DEEP = "[" * 100_000 + "]" * 100_000   # deeper than json (and the stack) goes


@pytest.mark.parametrize(("edit", "problem"), [
    # A lone surrogate parses but has no UTF-8: hashing it raised UnicodeEncodeError.
    (lambda line: line.replace('"model": "m"', '"model": "\\ud800"'),
     "its hash does not match its content (the entry was edited)"),
    # Nested past the parser's depth: json.loads raised RecursionError.
    (lambda line: line.replace('"model": "m"', f'"model": {DEEP}'),
     "nested too deeply (the entry was edited)"),
], ids=["lone-surrogate", "deep-nesting"])
def test_an_edit_hashing_or_parsing_cannot_take_is_named_at_its_line(
        edit: Callable[[str], str], problem: str) -> None:
    """`audit verify` ended in "unexpected error" (exit 3) instead of naming the line."""
    lines = trail()
    for index in (2, len(lines) - 1):   # in the middle and at the end
        edited = list(lines)
        edited[index] = edit(lines[index])
        assert edited[index] != lines[index]
        finding = verify(edited, recorded(lines))
        assert finding is not None and finding.line == index + 1
        assert problem in finding.problem
        assert settled_head(edited, recorded(lines), None) == recorded(lines)
    assert live_at([json.loads(line) for line in lines], "e", 0.0) == {}  # still readable


def test_a_last_entry_with_an_infinite_seq_settles_on_the_recorded_head() -> None:
    """int(1e999) raises OverflowError, not ValueError: `state migrate` (settled_head) and
    appends (chain_onto) raised on such an edited last entry."""
    lines = trail()
    head = recorded(lines)
    lines[-1] = lines[-1].replace(f'"seq": {head.seq}', '"seq": 1e999')
    assert settled_head(lines, head, UNNAMED) == head
    assert chain_onto(head, json.loads(lines[-1]), head) == head
    finding = verify(lines, head)
    assert finding is not None and finding.line == len(lines)


def test_live_at_replays_merges_rollbacks_and_decommissions() -> None:
    entries = [
        {"time": 10, "event": "mr.merge", "env": "production", "model": "a", "version": "1"},
        {"time": 20, "event": "mr.merge", "env": "staging", "model": "a", "version": "2"},
        {"time": 30, "event": "mr.merge", "env": "production", "model": "a", "version": "2"},
        {"time": 40, "event": "mr.merge", "env": "production", "model": "a", "version": "1"},
        {"time": 45, "event": "mr.merge", "env": "production", "model": "b", "version": "7"},
        {"time": 50, "event": "mr.merge", "env": "production", "model": "a", "version": "1",
         "status": "decommissioned"},
    ]
    assert live_at(entries, "production", 5) == {}
    assert live_at(entries, "production", 35)["a"].version == "2"
    assert live_at(entries, "production", 41)["a"].version == "1"          # the rollback
    assert set(live_at(entries, "production", 60)) == {"b"}                  # a decommissioned
    assert set(live_at(entries, "production", 60, model="a")) == set()


def test_merging_the_live_version_again_does_not_make_it_newly_live() -> None:
    """A re-render of the same version (a config change) is not a new deployment of it."""
    entries = [
        {"time": 10, "event": "mr.merge", "env": "staging", "model": "a", "version": "1"},
        {"time": 20, "event": "mr.merge", "env": "staging", "model": "a", "version": "1"},
        {"time": 30, "event": "mr.merge", "env": "staging", "model": "a", "version": "2"},
        {"time": 40, "event": "mr.merge", "env": "staging", "model": "a", "version": "1"},
    ]
    assert live_at(entries, "staging", 25)["a"].since == 10
    assert live_at(entries, "staging", 45)["a"].since == 40     # live again after version 2


def test_first_live_is_the_first_merge_whether_or_not_the_version_is_still_live() -> None:
    entries = [
        {"time": 10, "event": "mr.merge", "env": "staging", "model": "a", "version": "1"},
        {"time": 20, "event": "mr.merge", "env": "staging", "model": "a", "version": "1"},
        {"time": 30, "event": "mr.merge", "env": "staging", "model": "a", "version": "2"},
        {"time": 35, "event": "mr.merge", "env": "production", "model": "a", "version": "3"},
        {"time": 40, "event": "mr.merge", "env": "staging", "model": "a", "version": "2",
         "status": "decommissioned"},
    ]
    assert first_live(entries, "staging", "a", "1") == 10       # replaced by 2 since
    assert first_live(entries, "staging", "a", "2") == 30       # decommissioned since
    assert first_live(entries, "staging", "a", "3") is None     # only ever in production
    assert first_live(entries, "staging", "b", "1") is None


def _timed() -> Iterator[int]:
    """Entry times in trail order: an entry without one is left out of every replay."""
    return itertools.count(10, 10)


def test_previous_live_is_the_rollback_target() -> None:
    clock = _timed()

    def merge(version: str, status: str = "merged") -> dict[str, object]:
        return {"time": next(clock), "event": "mr.merge", "env": "production", "model": "a",
                "version": version, "status": status}
    assert previous_live([merge("1")], "production", "a") is None
    assert previous_live([merge("1"), merge("2")], "production", "a") == "1"
    assert previous_live([merge("1"), merge("2"), merge("2")], "production", "a") == "1"
    assert previous_live([merge("1"), merge("2"), merge("1")], "production", "a") == "2"
    assert previous_live([merge("1"), merge("2"), merge("2", "decommissioned"), merge("3")],
                         "production", "a") is None


def test_a_foreign_merge_is_a_step_of_its_own_never_a_rollback_target() -> None:
    """Version 3's MR merged with someone else's head: what runs is unknown, and the version
    live before it is 2, not 1 (the foreign step was read as nothing, so 2 counted as live)."""
    clock = _timed()

    def merge(version: str, event: str = "mr.merge", status: str = "merged"
              ) -> dict[str, object]:
        return {"time": next(clock), "event": event, "env": "production", "model": "a",
                "version": version, "status": status}
    foreign = merge("3", "mr.merge_foreign", "merged_unverified")
    assert previous_live([merge("1"), merge("2"), foreign], "production", "a") == "2"
    assert previous_live([merge("1"), merge("2"), foreign, merge("4")], "production", "a") == "2"
    assert previous_live([merge("2"), foreign, merge("2")], "production", "a") is None
    # An older merge recorded late, after the newer one, was never live since.
    assert previous_live([merge("1"), merge("2"), merge("1", status="superseded")],
                         "production", "a") == "1"


def test_a_merge_without_a_usable_time_is_no_rollback_target() -> None:
    """A legacy or edited entry cannot be placed in the history: it is left out of the
    rollback's replay as of every other."""
    entries = [
        {"time": 10, "event": "mr.merge", "env": "production", "model": "a", "version": "1"},
        {"time": "soon", "event": "mr.merge", "env": "production", "model": "a", "version": "2"},
        {"time": 30, "event": "mr.merge", "env": "production", "model": "a", "version": "3"},
    ]
    assert live_versions(entries, "production", "a") == ["1", "3"]
    assert previous_live(entries, "production", "a") == "1"
