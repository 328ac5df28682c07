"""`audit live`'s replay: a merge of promoter's MR with someone else's head names no version."""

from __future__ import annotations

from promoter.core.live_history import Live, first_live, live_at


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
