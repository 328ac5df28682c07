"""Several handlers of MR outcomes over one state store (replicas on PostgreSQL, processes or
threads on SQLite): each outcome is recorded exactly once, for the MR it is about, and never
onto the ledger row a newer MR took meanwhile. The interleavings are forced from inside the
first handler's MLflow write-back (one MLflow behind every replica), not by timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from promoter.core.live_history import live_at
from promoter.ports.pipeline import DeployedState
from promoter.service.outcome_claims import OutcomeClaims
from promoter.state.deliveries import PROCESSING_TAKEOVER_SECONDS
from promoter.state.gc_pending import GcPending
from tests.fixtures.state_backends import StateBackend
from tests.gitlab.test_outcomes import BRANCH, Tags, World

LIVE = ("fraud", "staging")


class Killed(BaseException):
    """The replica stops mid-handling (SIGKILL, OOM): no handler code runs after it."""


class Interrupted(Tags):
    """MLflow, during whose next write-back something else happens first (another replica's
    worker or hook handler); a queued ``Killed`` stops the writing process there instead."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: list[Callable[[], None]] = []

    def write_back(self, model: str, version: str, env: str, tags: dict[str, str]) -> None:
        if self.meanwhile:
            self.meanwhile.pop(0)()
        super().write_back(model, version, env, tags)


def replica(backend: StateBackend, tags: Tags, claims: OutcomeClaims | None = None) -> World:
    """A promoter replica: its own connection to the shared state, the one MLflow."""
    return World(backend.state_dir.parent, backend.open(), tags, claims)


def statuses(tags: Tags) -> list[tuple[str, str]]:
    return [(version, written["status"]) for _, version, _, written in tags.written]


def events(world: World, event: str) -> list[dict[str, Any]]:
    return [entry for entry in world.audit.entries() if entry["event"] == event]


def row(world: World) -> tuple[str, str, int | None]:
    found = world.ledger.by_deployment("fraud", "staging")
    assert found is not None
    return found.version, found.status, found.mr_iid


def test_a_merge_leaves_alone_the_row_a_newer_mr_took_while_it_was_recorded(
        state_backend: StateBackend) -> None:
    """!5 (v2) merges; while its outcome is written back to MLflow another replica's worker
    opens !6 (v3) for the same deployment. !6 is not merged: its row must stay waiting for it,
    and when !6 does merge, that merge is recorded like any other."""
    tags = Interrupted()
    first, other = replica(state_backend, tags), replica(state_backend, tags)
    first.opened(5, "2")
    tags.live[LIVE] = "1"
    tags.meanwhile.append(lambda: other.opened(6, "3"))
    assert first.hook(5)["status"] == "accepted"
    assert first.merges() == [{"iid": 5, "version": "2", "status": "merged"}]
    assert row(first) == ("3", "mr_opened", 6)
    assert tags.live == {LIVE: "2"}

    assert other.hook(6)["status"] == "accepted"
    assert first.merges() == [{"iid": 5, "version": "2", "status": "merged"},
                              {"iid": 6, "version": "3", "status": "merged"}]
    assert row(first) == ("3", "merged", 6)
    assert statuses(tags) == [("2", "merged"), ("1", "superseded"),
                              ("3", "merged"), ("2", "superseded")]
    assert tags.live == {LIVE: "3"}


def test_replicas_handling_one_merge_at_once_record_it_once(
        state_backend: StateBackend) -> None:
    """One merge reaches two handlers at once (GitLab's hook on one replica; the MR sweep,
    which feeds the same handler, or a second hook delivery on another): the second arrives
    while the first writes the outcome back to MLflow."""
    tags = Interrupted()
    first, second = replica(state_backend, tags), replica(state_backend, tags)
    first.opened(5, "2")
    tags.live[LIVE] = "1"
    meanwhile: list[dict[str, Any]] = []
    tags.meanwhile.append(lambda: meanwhile.append(second.hook(5, expect=None)))
    assert first.hook(5)["status"] == "accepted"
    assert first.merges() == [{"iid": 5, "version": "2", "status": "merged"}]
    assert statuses(tags) == [("2", "merged"), ("1", "superseded")]
    assert [entry["version"] for entry in events(first, "version.superseded")] == ["1"]
    assert meanwhile[0]["error"] == "unavailable"   # in progress elsewhere: retry later

    assert second.hook(5)["status"] == "accepted"    # the retry: already recorded
    assert len(first.merges()) == 1 and len(tags.written) == 2
    assert tags.live == {LIVE: "2"}
    assert row(first) == ("2", "merged", 5)


def test_two_merges_of_one_deployment_at_once_leave_the_later_one_live(
        state_backend: StateBackend) -> None:
    """!5 (v2) and !6 (v3) of one deployment merge at about the same moment; their hooks
    reach two replicas. live_version is read and written in MLflow: the two must not both
    replace v1, nor leave v2 live after v3."""
    tags = Interrupted()
    first, other = replica(state_backend, tags), replica(state_backend, tags)
    first.opened(5, "2")
    first.opened(6, "3")
    tags.live[LIVE] = "1"
    meanwhile: list[dict[str, Any]] = []
    tags.meanwhile.append(lambda: meanwhile.append(other.hook(6, expect=None)))
    assert first.hook(5)["status"] == "accepted"
    assert [(entry["version"], entry["replaced_by"])
            for entry in events(first, "version.superseded")] == [("1", "2")]
    assert events(first, "version.rolled_back") == []
    assert meanwhile[0]["error"] == "unavailable"    # !5 holds live_version: retry later

    assert other.hook(6)["status"] == "accepted"     # GitLab's retry
    assert tags.live == {LIVE: "3"}
    assert [(entry["version"], entry["replaced_by"])
            for entry in events(first, "version.superseded")] == [("1", "2"), ("2", "3")]
    assert events(first, "version.rolled_back") == []
    assert row(first) == ("3", "merged", 6)


def test_a_merge_whose_recorder_was_killed_is_recorded_by_a_later_handler(
        state_backend: StateBackend) -> None:
    """The replica recording a merge dies while writing it back to MLflow (after its audit
    entry). Its claim keeps other handlers off while it could still be alive; once stale, the
    next handler (the sweep's next pass, GitLab's re-delivery) records the merge."""
    tags = Interrupted()
    killed = replica(state_backend, tags)
    killed.opened(5, "2")
    tags.live[LIVE] = "1"

    def die() -> None:
        raise Killed

    tags.meanwhile.append(die)
    with pytest.raises(Killed):
        killed.hook(5)
    assert replica(state_backend, tags).hook(5, expect=503)["error"] == "unavailable"
    assert row(killed) == ("2", "mr_opened", 5)      # still waiting: the sweep looks again

    later = replica(state_backend, tags, OutcomeClaims(
        state_backend.open(), clock=lambda: time.time() + PROCESSING_TAKEOVER_SECONDS + 1))
    assert later.hook(5)["status"] == "accepted"
    assert row(later) == ("2", "merged", 5)
    assert tags.live == {LIVE: "2"}
    assert statuses(tags) == [("2", "merged"), ("1", "superseded")]
    # The killed handler's audit entry stays: the merge is in the trail twice, never zero.
    assert len(later.merges()) == 2



def gc_planned(world: World, *removes: tuple[str, str], version: str | None = "2") -> None:
    """GC's MR !9 was proposed (and noted, as `promoter gc` does), removing fraud ``version``'s
    overlay in each (name, env) given (``version`` None: an overlay pinning none)."""
    gc_head = "9" * 40
    world.heads.record(7, 9, "promoter/gc", gc_head, "20260101")
    world.audit.record("gc.proposed", iid=9, head_sha=gc_head, removes=[
        {"model": "fraud", "name": name, "env": env, "version": version}
        for name, env in removes])
    GcPending(world.ledger.db).proposed(9)


def test_a_gc_merge_reaching_two_handlers_is_recorded_once(state_backend: StateBackend) -> None:
    """GC's merge, like any MR's, reaches several handlers (two replicas at once; a second
    delivery without GitLab's Idempotency-Key, which GitLab before 17.4 does not send). Its
    merge decommissions fraud v2 once: a second recording after fraud v3 was deployed again
    would mark that deployment decommissioned and clear its live_version."""
    tags = Interrupted()
    first, second = replica(state_backend, tags), replica(state_backend, tags)
    first.opened(5, "2")
    assert first.hook(5)["status"] == "accepted"               # fraud v2 is live in staging
    gc_planned(first, ("fraud", "staging"))
    pending = GcPending(first.ledger.db)
    assert pending.unrecorded() == [9]                         # followed until recorded
    meanwhile: list[dict[str, Any]] = []
    tags.meanwhile.append(
        lambda: meanwhile.append(second.hook(9, branch="promoter/gc", expect=None)))
    assert first.hook(9, branch="promoter/gc")["status"] == "accepted"
    assert meanwhile[0]["error"] == "unavailable"              # in progress elsewhere
    assert row(first) == ("2", "decommissioned", 5) and tags.live == {LIVE: None}

    first.opened(6, "3")                                       # fraud comes back: v3
    assert first.hook(6)["status"] == "accepted"
    assert pending.unrecorded() == []                          # recorded: not followed
    pending.proposed(9)            # noted again (GC re-proposed on a reopened !9, say)
    assert second.hook(9, branch="promoter/gc")["status"] == "accepted"   # the retry
    assert pending.unrecorded() == []      # found recorded: the sweep stops reading it
    assert [(e["version"], e["status"]) for e in events(first, "mr.merge") if e.get("gc")] \
        == [("2", "decommissioned")]
    assert row(first) == ("3", "merged", 6)
    assert tags.live == {LIVE: "3"}


def test_a_gc_merge_whose_recorder_was_killed_part_way_is_recorded_again_in_full(
        state_backend: StateBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica recording GC's merge dies after marking production's row and before
    staging's. GC's own `mr.merge` entry (what says the merge is recorded) is not written yet
    and its unrecorded note stays, so the next handler (the sweep follows the note) records
    the merge in full: each row decommissioned, GC's entry once, the note gone."""
    tags = Tags()
    killed = replica(state_backend, tags)
    killed.opened(5, "2")
    assert killed.hook(5)["status"] == "accepted"
    killed.ledger.put(DeployedState("fraud", "production", "fraud", "2", "merged", 4))
    gc_planned(killed, ("fraud", "production"), ("fraud", "staging"))
    marked = killed.ledger.decommission_collected

    def dies_at_staging(name: str, env: str, *rest: Any) -> Any:
        if env == "staging":
            raise Killed
        return marked(name, env, *rest)

    monkeypatch.setattr(killed.ledger, "decommission_collected", dies_at_staging)
    with pytest.raises(Killed):
        killed.hook(9, branch="promoter/gc")
    assert [e for e in events(killed, "mr.merge") if e.get("name") == "gc"] == []
    assert GcPending(state_backend.open()).unrecorded() == [9]
    assert row(killed) == ("2", "merged", 5)

    later = replica(state_backend, tags, OutcomeClaims(
        state_backend.open(), clock=lambda: time.time() + PROCESSING_TAKEOVER_SECONDS + 1))
    assert later.hook(9, branch="promoter/gc")["status"] == "accepted"
    assert row(later) == ("2", "decommissioned", 5)
    assert [e["iid"] for e in events(later, "mr.merge") if e.get("name") == "gc"] == [9]
    assert GcPending(state_backend.open()).unrecorded() == []


def gc_merges(world: World) -> list[tuple[str, str, str]]:
    return [(e["env"], e["version"], e["status"]) for e in events(world, "mr.merge")
            if e.get("gc")]


def test_a_gc_merge_leaves_alone_the_deployment_of_the_model_that_took_the_name_over(
        state_backend: StateBackend) -> None:
    """GC planned the removal of model fraud's overlay; fraud was then decommissioned
    everywhere, and model "Fraud" took the name over and opened MR !6. The GC merge removed
    fraud's overlay: the new owner's open MR is still what its row waits on."""
    tags = Tags()
    world = replica(state_backend, tags)
    world.opened(5, "2")
    assert world.hook(5)["status"] == "accepted"               # fraud v2 is live in staging
    gc_planned(world, ("fraud", "staging"))
    world.ledger.set_status("fraud", "staging", "decommissioned")  # its removal MR merged
    assert world.ledger.claim_name("fraud", "Fraud", "staging") == frozenset()
    world.ledger.put(DeployedState("Fraud", "staging", "fraud", "1", "mr_opened", 6))

    assert world.hook(9, branch="promoter/gc")["status"] == "accepted"
    taken = world.ledger.by_deployment("fraud", "staging")
    assert taken is not None
    assert (taken.model, taken.version, taken.status, taken.mr_iid) == \
        ("Fraud", "1", "mr_opened", 6)
    assert gc_merges(world) == [("staging", "2", "decommissioned")]


def test_a_gc_merge_recorded_again_after_its_write_back_failed_spares_a_later_deployment(
        state_backend: StateBackend) -> None:
    """The GC merge's first recording failed (MLflow down) and was released; fraud v3 was
    deployed before the merge came again. What the merge removed was v2: v3's row and
    live_version stay, and the failed attempt left no audit entry for the retry to repeat."""
    tags = Tags()
    world = replica(state_backend, tags)
    world.opened(5, "2")
    assert world.hook(5)["status"] == "accepted"
    gc_planned(world, ("fraud", "staging"))
    tags.failures = 1
    assert world.hook(9, branch="promoter/gc", expect=None)["error"] == "unavailable"
    assert gc_merges(world) == []

    world.opened(6, "3")                                       # fraud v3 deployed since
    assert world.hook(6)["status"] == "accepted"
    assert world.hook(9, branch="promoter/gc")["status"] == "accepted"   # the re-delivery
    assert row(world) == ("3", "merged", 6)
    assert tags.live == {LIVE: "3"}
    # Neither the row nor live_version named v2 any more: not a decommission `audit live`
    # would replay (it would then say nothing runs in staging while v3 does).
    assert gc_merges(world) == []
    [skipped] = events(world, "gc.skipped")
    assert (skipped["iid"], skipped["env"], skipped["version"]) == (9, "staging", "2")
    assert live_at(world.audit.entries(), "staging", time.time())["fraud"].version == "3"


def test_a_gc_merge_waits_while_another_handler_moves_a_live_version_it_clears(
        state_backend: StateBackend) -> None:
    """A merge of fraud in staging is being recorded elsewhere (it holds staging's
    live_version): the GC merge removing fraud's overlays in production and staging is
    answered 503 before writing anything, and its retry records each overlay once."""
    tags = Tags()
    world = replica(state_backend, tags)
    world.opened(5, "2")
    assert world.hook(5)["status"] == "accepted"
    world.ledger.put(DeployedState("fraud", "production", "fraud", "2", "merged", 4))
    tags.live[("fraud", "production")] = "2"                   # v2 runs in production too
    gc_planned(world, ("fraud", "production"), ("fraud", "staging"))
    elsewhere = OutcomeClaims(state_backend.open())
    with elsewhere.live_version(*LIVE):
        assert world.hook(9, branch="promoter/gc", expect=None)["error"] == "unavailable"
    assert gc_merges(world) == [] and row(world) == ("2", "merged", 5)
    assert tags.live == {LIVE: "2", ("fraud", "production"): "2"}

    assert world.hook(9, branch="promoter/gc")["status"] == "accepted"   # the retry
    assert gc_merges(world) == [("production", "2", "decommissioned"),
                                ("staging", "2", "decommissioned")]
    assert row(world) == ("2", "decommissioned", 5)
    assert tags.live == {LIVE: None, ("fraud", "production"): None}


def test_a_gc_merge_of_an_overlay_pinning_no_version_clears_the_rows_live_version(
        state_backend: StateBackend) -> None:
    """An overlay that pins no version (GC records its version as None) still ran the version
    its ledger row names: the merge that removes it clears that live_version as it marks the
    row decommissioned, and audits that version's decommission."""
    tags = Tags()
    world = replica(state_backend, tags)
    world.opened(5, "2")
    assert world.hook(5)["status"] == "accepted"
    gc_planned(world, ("fraud", "staging"), version=None)
    assert world.hook(9, branch="promoter/gc")["status"] == "accepted"
    assert row(world) == ("2", "decommissioned", 5)
    assert tags.live == {LIVE: None}
    assert gc_merges(world) == [("staging", "2", "decommissioned")]
    assert "fraud" not in live_at(world.audit.entries(), "staging", time.time())


def gc_decommissioned_removal(world: World) -> None:
    """fraud v2 is live in staging; its removal MR !8 is open (row decommissioning) when GC's
    MR !9, removing the same overlay, is merged first."""
    world.opened(5, "2")
    assert world.hook(5)["status"] == "accepted"
    world.heads.record(7, 8, BRANCH, ("8" * 40), "2", "fraud")
    world.ledger.put(DeployedState("fraud", "staging", "fraud", "2", "decommissioning", 8))
    gc_planned(world, ("fraud", "staging"))
    assert world.hook(9, branch="promoter/gc")["status"] == "accepted"
    assert row(world) == ("2", "decommissioned", 8) and world.tags.live == {LIVE: None}


def test_closing_a_removal_mr_after_gc_decommissioned_its_row_changes_nothing(
        state_backend: StateBackend) -> None:
    """The close of a removal MR GC overtook: the model does not get its name back (a
    "closed" row), nor its removed version a "closed" tag."""
    tags = Tags()
    world = replica(state_backend, tags)
    gc_decommissioned_removal(world)
    written = list(tags.written)

    assert world.hook(8, action="close")["status"] == "accepted"
    assert row(world) == ("2", "decommissioned", 8)
    assert tags.written == written and tags.live == {LIVE: None}
    [closed] = events(world, "mr.close")
    assert (closed["iid"], closed["status"]) == (8, None)


def test_merging_a_removal_mr_after_gc_decommissioned_its_row_records_nothing_more(
        state_backend: StateBackend) -> None:
    """Its merge is the decommission GC recorded already: the row stays decommissioned and
    live_version names no version (not v2, which no overlay deploys any more)."""
    tags = Tags()
    world = replica(state_backend, tags)
    gc_decommissioned_removal(world)
    written = list(tags.written)

    assert world.hook(8)["status"] == "accepted"
    assert row(world) == ("2", "decommissioned", 8)
    assert tags.written == written and tags.live == {LIVE: None}
    assert "fraud" not in live_at(world.audit.entries(), "staging", time.time())


def taken_over(world: World) -> None:
    """fraud's MR !5 (v2) is still open when fraud is decommissioned everywhere; model
    "Fraud", deriving the same deployment name, takes the name over and opens MR !6."""
    world.ledger.set_status("fraud", "staging", "decommissioned")  # its removal MR merged
    assert world.ledger.claim_name("fraud", "Fraud", "staging") == frozenset()
    world.opened(6, "1", model="Fraud")


def test_a_late_outcome_of_the_old_owners_mr_is_written_back_to_the_old_owner(
        state_backend: StateBackend) -> None:
    """After the takeover the row of (fraud, staging) is Fraud's: the close of fraud's MR !5
    is about fraud v2, not Fraud v2, and Fraud's open MR stays what its row waits on."""
    tags = Tags()
    world = replica(state_backend, tags)
    world.opened(5, "2")
    taken_over(world)

    assert world.hook(5, action="close")["status"] == "accepted"
    assert tags.written == [("fraud", "2", "staging", {
        "status": "closed", "mr_url": "https://gitlab.example.com/g/gitops/-/merge_requests/5"})]
    [closed] = events(world, "mr.close")
    assert (closed["model"], closed["version"], closed["status"]) == ("fraud", "2", "closed")
    new_owner = world.ledger.by_deployment("fraud", "staging")
    assert new_owner is not None
    assert (new_owner.model, new_owner.status, new_owner.mr_iid) == ("Fraud", "mr_opened", 6)


def test_a_late_outcome_of_an_mr_whose_model_was_not_recorded_is_not_attributed(
        state_backend: StateBackend) -> None:
    """MR !5's head was recorded before promoter recorded its model: once the name has
    another owner, nothing tells whose MR !5 was. Its merge is audited as unattributed and
    nothing is written to MLflow (never to the new owner's model)."""
    tags = Tags()
    world = replica(state_backend, tags)
    world.opened(5, "2")
    world.heads.record(7, 5, BRANCH, ("5" * 40), "2")            # as recorded before models
    taken_over(world)

    assert world.hook(5)["status"] == "accepted"
    assert tags.written == [] and tags.live == {}
    [merged] = events(world, "mr.merge")
    assert merged["unattributed"] is True
    assert (merged["iid"], merged["model"], merged["version"]) == (5, None, None)
    assert row(world) == ("1", "mr_opened", 6)
