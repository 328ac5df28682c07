"""`audit live`'s replay: a merge of promoter's MR with someone else's head names no version."""

from __future__ import annotations

import math

import pytest

from promoter.core.live_history import (
    Live,
    entry_time,
    first_live,
    live_at,
    live_versions,
    previous_live,
)


def merge(when: float, version: str, event: str = "mr.merge", **extra: str) -> dict[str, object]:
    return {"time": when, "event": event, "env": "prod", "model": "fraud", "version": version,
            "url": f"https://gl/mr/{version}", **extra}


def test_a_foreign_merge_leaves_the_version_unknown_until_promoters_next_merge() -> None:
    trail = [merge(1, "3"), merge(2, "4", "mr.merge_foreign", head_sha="b" * 40),
             merge(3, "4")]
    assert live_at(trail, "prod", 1.5) == {"fraud": Live("fraud", "3", 1, "https://gl/mr/3")}
    assert live_at(trail, "prod", 2.5) == {"fraud": Live(
        "fraud", None, 2, "https://gl/mr/4", foreign_head="b" * 40, proposed_version="4")}
    assert live_at(trail, "prod", 3.5)["fraud"].version == "4"
    # The soak clock counts only what promoter verified: version 4 is first live at 3.
    assert first_live(trail, "prod", "fraud", "4") == 3


def test_a_late_decommission_of_an_older_version_leaves_the_one_deployed_since_live() -> None:
    """A GC merge planned while v3 ran, recorded after v4 was deployed (trails written before
    GC audited such overlays as skipped hold it): v4 still runs. A decommission of the live
    version, or of no version named, ends it."""
    gone = {"status": "decommissioned"}
    trail = [merge(1, "3"), merge(2, "4"), merge(3, "3", **gone)]
    assert live_at(trail, "prod", 3.5) == {"fraud": Live("fraud", "4", 2, "https://gl/mr/4")}
    assert live_at([*trail, merge(4, "4", **gone)], "prod", 4.5) == {}
    unnamed = {"time": 4, "event": "mr.merge", "env": "prod", "model": "fraud", **gone}
    assert live_at([*trail, unnamed], "prod", 4.5) == {}


# --- live_versions (rollback's history) follows the same rule as live_at --------------------

GONE = {"status": "decommissioned"}


def unnamed_decommission(when: float) -> dict[str, object]:
    """A decommission naming no version (GC's removal of an overlay that pinned none)."""
    return {"time": when, "event": "mr.merge", "env": "prod", "model": "fraud", **GONE}


def test_a_decommission_naming_no_version_ends_the_history_as_it_ends_what_is_live() -> None:
    trail = [merge(1, "3"), merge(2, "4"), unnamed_decommission(3), merge(4, "5")]
    assert live_at(trail, "prod", 3.5) == {}
    assert live_versions(trail[:3], "prod", "fraud") == []
    # What ran before the decommission is no rollback target of the version deployed after.
    assert live_versions(trail, "prod", "fraud") == ["5"]
    assert previous_live(trail, "prod", "fraud") is None


def test_a_late_decommission_of_an_older_version_keeps_the_history_of_what_runs() -> None:
    """A GC merge of v3's overlay recorded after v4 was deployed: v4 still runs, and v3 is
    still what rollback goes back to."""
    trail = [merge(1, "3"), merge(2, "4"), merge(3, "3", **GONE)]
    assert live_at(trail, "prod", 3.5)["fraud"].version == "4"
    assert live_versions(trail, "prod", "fraud") == ["3", "4"]
    assert previous_live(trail, "prod", "fraud") == "3"


def test_a_decommission_of_the_live_version_ends_the_history() -> None:
    trail = [merge(1, "3"), merge(2, "4"), merge(3, "4", **GONE)]
    assert live_at(trail, "prod", 3.5) == {}
    assert live_versions(trail, "prod", "fraud") == []
    assert previous_live([*trail, merge(4, "5")], "prod", "fraud") is None


# --- entries whose time promoter never wrote -------------------------------------------------

BAD_TIMES = [None, "2026-11-30T12:00:00Z", True, math.nan, math.inf, -math.inf, 1e300,
             10 ** 400]


@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_an_entry_without_a_usable_time_has_none(bad: object) -> None:
    entry = merge(0, "3")
    if bad is None:
        del entry["time"]
    else:
        entry["time"] = bad
    assert entry_time(entry) is None


def test_entry_time_reads_what_promoter_wrote() -> None:
    assert entry_time(merge(1700000000.25, "3")) == 1700000000.25
    assert entry_time(merge(1700000000, "3")) == 1700000000.0


@pytest.mark.parametrize("bad", [math.nan, -math.inf, math.inf, "1", True], ids=repr)
def test_a_merge_without_a_usable_time_never_starts_a_soak_clock(bad: object) -> None:
    """NaN compared false with every moment (live at any time asked, ``since`` NaN), -inf
    made a soak that began before time: such a merge counts for nothing."""
    forged = {**merge(0, "4"), "time": bad}
    trail = [merge(100, "3"), forged]
    assert first_live(trail, "prod", "fraud", "4") is None
    assert live_at(trail, "prod", 200) == {"fraud": Live("fraud", "3", 100, "https://gl/mr/3")}
    assert live_versions(trail, "prod", "fraud") == ["3"]
    assert all(math.isfinite(item.since) for item in live_at(trail, "prod", 200).values())
