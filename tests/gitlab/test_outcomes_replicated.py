"""Several handlers of MR outcomes over one state store (replicas on PostgreSQL, processes or
threads on SQLite): each outcome is recorded exactly once, for the MR it is about, and never
onto the ledger row a newer MR took meanwhile. The interleavings are forced from inside the
first handler's MLflow write-back (one MLflow behind every replica), not by timing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fixtures.state_backends import StateBackend
from tests.gitlab.test_outcomes import Tags, World

LIVE = ("fraud", "staging")


class Interrupted(Tags):
    """MLflow, during whose next write-back something else happens first (another replica's
    worker or hook handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: list[Callable[[], None]] = []

    def write_back(self, model: str, version: str, env: str, tags: dict[str, str]) -> None:
        if self.meanwhile:
            self.meanwhile.pop(0)()
        super().write_back(model, version, env, tags)


def replica(backend: StateBackend, tags: Tags) -> World:
    """A promoter replica: its own connection to the shared state, the one MLflow."""
    return World(backend.state_dir.parent, backend.open(), tags)


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

