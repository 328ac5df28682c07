"""The audit chain head anchored in the GitOps repository (core/audit_anchor.py): each
promotion commit carries it; a local trail rewritten and re-sealed end to end still passes the
local check, but not the comparison with the anchors."""

from __future__ import annotations

import json

from promoter.core import audit_anchor
from promoter.core.audit_chain import EMPTY, Head, head_of, seal, verify
from tests.core.test_audit_chain import trail
from tests.core.test_pipeline import MODEL, NAME, World


def reseal_from(lines: list[str], index: int, **changes: object) -> list[str]:
    """What someone covering their tracks does: edit entry ``index`` and re-seal every entry
    from there, so each hash and link is consistent again."""
    head = EMPTY if index == 0 else head_of(json.loads(lines[index - 1]))
    out = lines[:index]
    for number, line in enumerate(lines[index:]):
        entry = json.loads(line)
        if number == 0:
            entry.update(changes)
        sealed = seal(entry, head)
        head = head_of(sealed)
        out.append(json.dumps(sealed, sort_keys=True))
    return out


def anchor(lines: list[str], seq: int) -> dict[str, str]:
    entry = json.loads(lines[seq - 1])
    return {audit_anchor.anchor_path("m", "production"): audit_anchor.anchor_text(
        head_of(entry), model="m", env="production", version="1")}


def test_an_untouched_trail_matches_its_anchors() -> None:
    lines = trail(6)
    assert audit_anchor.check(lines, {**anchor(lines, 3), "x": audit_anchor.anchor_text(
        head_of(json.loads(lines[5])), model="n", env="staging", version="2")}) == []


def test_a_resealed_rewrite_passes_the_local_check_but_not_the_anchor() -> None:
    lines = trail(6)
    anchors = anchor(lines, 4)
    rewritten = reseal_from(lines, 1, version="99")
    assert verify(rewritten, head_of(json.loads(rewritten[-1]))) is None   # locally consistent
    (finding,) = audit_anchor.check(rewritten, anchors)
    assert finding.anchored == Head(4, json.loads(lines[3])["hash"])
    assert "entry 4" in finding.problem and "rewritten" in finding.problem
    # a rewrite after the anchored entry is not the anchor's to see
    assert audit_anchor.check(reseal_from(lines, 4, version="99"), anchors) == []


def test_a_trail_cut_shorter_than_an_anchor_is_found() -> None:
    lines = trail(6)
    (finding,) = audit_anchor.check(lines[:3], anchor(lines, 5))
    assert "entry 5" in finding.problem and "3 entries" in finding.problem


def test_a_line_nested_too_deeply_to_parse_is_passed_over() -> None:
    """The comparison with the anchors raised RecursionError on such a line (`audit verify
    --against-git` ended in "unexpected error"); the local check names it instead."""
    lines = trail(6)
    lines[1] = lines[1].replace('"model": "m"', '"model": ' + "[" * 100_000 + "]" * 100_000)
    assert audit_anchor.check(lines, anchor(lines, 4)) == []
    (finding,) = audit_anchor.check(lines, anchor(trail(6), 2))
    assert "entry 2" in finding.problem


def test_a_file_that_is_not_an_anchor_is_reported() -> None:
    (finding,) = audit_anchor.check(trail(2), {"a.json": '{"seq": 1, "hash": "zz"}'})
    assert finding.anchored is None and "not an audit anchor" in finding.problem


class Heads:
    def __init__(self) -> None:
        self.head: Head | None = Head(7, "ab" * 32)

    def recorded_head(self) -> Head | None:
        return self.head


def test_each_promotion_commit_carries_the_head_but_a_moved_head_alone_commits_nothing(
        world: World) -> None:
    heads = Heads()
    world.ports_extra["audit"] = heads
    path = audit_anchor.anchor_path(NAME, "production")
    world.promote("2")
    branch = world.provider.branches[f"promote/{NAME}/production"]
    assert audit_anchor.parse_anchor(branch[path]) == Head(7, "ab" * 32)
    assert json.loads(branch[path])["model"] == MODEL
    commits = len(world.provider.commits)
    heads.head = Head(9, "cd" * 32)   # the trail grew (MR events); the manifests did not change
    assert world.run("production", "2").outcome == "unchanged"
    assert len(world.provider.commits) == commits
    world.promote("3")                 # a real change takes the current head along
    branch = world.provider.branches[f"promote/{NAME}/production"]
    assert audit_anchor.parse_anchor(branch[path]) == Head(9, "cd" * 32)


def test_no_audit_port_writes_no_anchor(world: World) -> None:
    world.promote("2")
    assert not any(p.startswith(".promoter/")
                   for p in world.provider.branches[f"promote/{NAME}/production"])


def test_deployments_whose_name_and_environment_join_alike_have_their_own_anchor() -> None:
    """``<name>-<env>.json`` was one file for fraud-eu in prod and fraud in eu-prod: their MRs
    conflicted over it and each merge overwrote the other's witness. Anchors written in that
    layout stay in older trees and are checked like the others."""
    paths = {audit_anchor.anchor_path("fraud-eu", "prod"),
             audit_anchor.anchor_path("fraud", "eu-prod"),
             audit_anchor.anchor_path("fraud", "eu"), audit_anchor.anchor_path("fraud-eu", "x")}
    assert len(paths) == 4 and all(p.startswith(f"{audit_anchor.ANCHOR_DIR}/") for p in paths)
    lines = trail(5)
    old_layout = f"{audit_anchor.ANCHOR_DIR}/fraud-eu-prod.json"
    anchors = {old_layout: next(iter(anchor(lines, 3).values())), **anchor(lines, 5)}
    assert audit_anchor.check(lines, anchors) == []
    (finding,) = audit_anchor.check(lines[:2], {old_layout: anchors[old_layout]})
    assert finding.path == old_layout and "cut short" in finding.problem
