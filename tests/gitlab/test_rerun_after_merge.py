"""A promotion job run again after its MR was merged (an alias event redelivered, reconcile):
the target branch already holds its files, and the status its merge left must stay."""

from __future__ import annotations

import dataclasses

from promoter.core.results import DeploymentStatus
from tests.core.test_pipeline import (
    MODEL,
    CountingImages,
    CountingSigner,
    MemoryLedger,
    MemoryRegistry,
    World,
)
from tests.gitlab.conftest import Harness


def _world(harness: Harness) -> World:
    registry = MemoryRegistry()
    registry.add(MODEL, "1")
    return World(registry, harness.provider, MemoryLedger(),  # type: ignore[arg-type]
                 CountingImages(), CountingSigner(), [])


def _merged(harness: Harness, iid: int, head: str | None) -> None:
    for user in ("alice", "bob"):
        harness.approve(iid, user)
    harness.merge(iid, head)


def _merged_and_recorded(harness: Harness) -> tuple[World, int | None]:
    """Version 1 promoted, its MR merged and the merge recorded (as its hook would)."""
    world = _world(harness)
    first = world.promote("1")
    assert first.mr_iid is not None
    _merged(harness, first.mr_iid, first.head_sha)
    row = world.ledger.get(MODEL, "production")
    assert row is not None
    world.ledger.put(dataclasses.replace(row, status=DeploymentStatus.MERGED))
    return world, first.mr_iid


def test_a_rerun_keeps_the_recorded_merge(harness: Harness) -> None:
    world, iid = _merged_and_recorded(harness)
    again = world.run(requested="1")
    assert (again.outcome, again.status, again.mr_iid) == ("unchanged", "merged", iid)
    assert world.registry.writes[-1][3]["status"] == "merged"


def test_a_rerun_before_the_merge_is_recorded_leaves_it_to_the_sweep(harness: Harness) -> None:
    """Its hook was lost: the row stays mr_opened, so the MR sweep still follows the MR and
    records the merge (audit entry, live_version), which writing merged here would skip."""
    world = _world(harness)
    first = world.promote("1")
    assert first.mr_iid is not None
    _merged(harness, first.mr_iid, first.head_sha)

    again = world.run(requested="1")
    assert (again.outcome, again.status) == ("unchanged", "mr_opened")


def test_a_rerun_keeps_deployed_once_the_clusters_run_it(harness: Harness) -> None:
    """Argo CD's feedback told `deployed` (and tells it again only when the clusters'
    status changes): a re-run writing `merged` would set it back for good."""
    world, _ = _merged_and_recorded(harness)
    world.registry.write_back(MODEL, "1", "production", {"status": "deployed"})  # Argo CD's

    again = world.run(requested="1")
    assert (again.outcome, again.status) == ("unchanged", "merged")
    assert "status" not in world.registry.writes[-1][3]
    assert world.registry.tags(MODEL, "1")["promoter.production.status"] == "deployed"
