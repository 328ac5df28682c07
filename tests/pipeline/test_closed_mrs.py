"""The version of an MR a proposal closed itself (superseded, withdrawn) is told what became of
it, in MLflow and in the audit trail. Before, it kept ``promoter.<env>.status=mr_opened`` for
good (the hook and the MR sweep leave promoter's own closes alone), and no entry named the MR.

Driven on the local git provider (real git) with promoter's outcomes wired in, as `promoter mr`
records them; MLflow is the in-memory registry of the pipeline tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from promoter.core.jobs import Job, JobKey
from promoter.core.pipeline import Ports
from promoter.core.results import PipelineResult
from promoter.service import composition, jobs_handler
from promoter.service.jobs_handler import ANY_VERSION
from tests.core.test_pipeline import MODEL, RENDERER, SETTINGS, MemorySteps
from tests.test_gc import _merged, _recorded

STATUS, REASON = "promoter.production.status", "promoter.production.reason"


def test_a_withdrawn_mr_leaves_its_version_closed_with_the_reason(tmp_path: Path) -> None:
    """Version 2 runs; version 3's MR is open; the alias moves back to 2: 3's MR is withdrawn,
    and version 3 says closed (it said mr_opened, naming an MR nobody can merge)."""
    provider, _ledger, _audit, registry, world = _recorded(tmp_path, "2", "3")
    _merged(provider, world.promote("2").mr_iid)
    newer = world.promote("3")
    assert registry.tags(MODEL, "3")[STATUS] == "mr_opened"

    back = world.promote("2")

    assert back.closed_mr is not None
    assert (back.closed_mr.iid, back.closed_mr.closed_as, back.closed_mr.version) == (
        newer.mr_iid, "withdrawn", "3")
    assert registry.tags(MODEL, "3")[STATUS] == "closed"
    assert registry.tags(MODEL, "3")[REASON] == \
        f"merge request !{newer.mr_iid} withdrawn: version 2 is proposed instead"
    assert registry.tags(MODEL, "2")[STATUS] == "merged"        # the proposal's own, unchanged
    assert PipelineResult.from_dict(back.as_dict()).closed_mr == back.closed_mr


def test_a_superseded_mr_leaves_its_version_closed(tmp_path: Path) -> None:
    provider, _ledger, _audit, registry, world = _recorded(tmp_path, "2", "3", supersede=True)
    first = world.promote("2")

    newer = world.promote("3")

    assert newer.outcome is not None and newer.outcome.value == "superseded"
    assert newer.closed_mr is not None and newer.closed_mr.iid == first.mr_iid
    assert provider.get(first.mr_iid).title.endswith(" - superseded")
    assert registry.tags(MODEL, "2")[STATUS] == "closed"
    assert registry.tags(MODEL, "2")[REASON] == \
        f"merge request !{first.mr_iid} superseded: version 3 is proposed instead"
    assert registry.tags(MODEL, "3")[STATUS] == "mr_opened"


def test_a_superseded_removal_leaves_the_version_it_kept_merged(tmp_path: Path) -> None:
    """Version 2 runs; its removal MR is open when the alias is set to 3: the removal is
    superseded, and 2, which the target branch still runs, no longer says decommissioning."""
    provider, _ledger, _audit, registry, world = _recorded(tmp_path, "2", "3", supersede=True)
    _merged(provider, world.promote("2").mr_iid)
    registry.set_alias(MODEL, "production", None)
    removal = world.run(action="decommission")
    assert removal.mr_iid is not None and registry.tags(MODEL, "2")[STATUS] == "decommissioning"

    newer = world.promote("3")

    assert newer.closed_mr is not None and newer.closed_mr.iid == removal.mr_iid
    assert registry.tags(MODEL, "2")[STATUS] == "merged"
    assert registry.tags(MODEL, "2")[REASON].startswith(
        f"removal merge request !{removal.mr_iid} superseded")


def test_a_withdrawn_mr_of_the_proposed_version_gets_no_second_status(tmp_path: Path) -> None:
    """A removal withdrawing the first promotion's MR of the version it removes: that version's
    status is the removal's own (decommissioned), not overwritten by "closed"."""
    provider, _ledger, _audit, registry, world = _recorded(tmp_path, "2")
    _merged(provider, world.promote("2", env="staging").mr_iid)
    first = world.promote("2")
    registry.set_alias(MODEL, "production", None)

    removal = world.run(action="decommission")

    assert removal.closed_mr is not None and removal.closed_mr.iid == first.mr_iid
    assert (removal.closed_mr.version, removal.closed_mr.status) == ("2", None)
    assert registry.tags(MODEL, "2")[STATUS] == "decommissioned"


def test_the_audit_trail_names_the_withdrawn_mr_and_its_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ledger, audit, registry, world = _recorded(tmp_path, "2", "3")
    _merged(provider, world.promote("2").mr_iid)
    newer = world.promote("3")
    registry.set_alias(MODEL, "production", "2")
    ports = Ports(registry, provider, world.ledger, RENDERER,  # type: ignore[arg-type]
                  world.images, world.signer)
    monkeypatch.setattr(composition, "ports", lambda _s, _r: ports)
    monkeypatch.setattr(composition, "pipeline_config",
                        lambda _s, _r: SETTINGS.pipeline_config())
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    handle = jobs_handler.build_job_handler(settings, registry)  # type: ignore[arg-type]
    now = time.time()
    job = Job(7, JobKey(MODEL, ANY_VERSION, "production", "promote"), "running", 1,
              {"actor": "alice"}, {}, None, now, now, now, "w", None)

    handle(job, MemorySteps())  # type: ignore[arg-type]

    [entry] = [e for e in audit.entries() if e["event"] == "mr.withdrawn"]
    assert (entry["iid"], entry["version"], entry["status"], entry["replaced_by"]) == (
        newer.mr_iid, "3", "closed", "2")
    assert (entry["model"], entry["env"], entry["actor"], entry["job_id"]) == (
        MODEL, "production", "alice", 7)


def test_an_mr_updated_in_place_to_another_version_leaves_the_old_one_closed(
        tmp_path: Path) -> None:
    """Version 1 runs; version 3's MR is open; the alias moves to 2 (a rollback past it):
    with `git.newer_version: update` the MR now proposes 2. Version 3 said mr_opened for
    good, naming an MR that deployed another version once merged."""
    provider, _ledger, _audit, registry, world = _recorded(tmp_path, "1", "2", "3")
    _merged(provider, world.promote("1").mr_iid)
    newer = world.promote("3")

    back = world.promote("2")

    assert back.mr_iid == newer.mr_iid and back.outcome is not None \
        and back.outcome.value == "updated"
    assert back.closed_mr is not None
    assert (back.closed_mr.iid, back.closed_mr.closed_as, back.closed_mr.version,
            back.closed_mr.event) == (newer.mr_iid, "replaced", "3", "mr.replaced")
    assert registry.tags(MODEL, "3")[STATUS] == "closed"
    assert registry.tags(MODEL, "3")[REASON] == \
        f"merge request !{newer.mr_iid} was updated: version 2 is proposed instead"
    assert registry.tags(MODEL, "2")[STATUS] == "mr_opened"
    # The same version pushed again (new content) replaces nothing.
    again = world.promote("2")
    assert again.closed_mr is None


def test_a_retry_after_a_crash_past_the_in_place_update_still_closes_the_old_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt updated the MR to version 2 and died before the write-back; the
    retry found the MR as it wants it (unchanged) and left version 3 at mr_opened for good."""
    from promoter.core import closed_mr

    provider, _ledger, _audit, registry, world = _recorded(tmp_path, "1", "2", "3")
    _merged(provider, world.promote("1").mr_iid)
    newer = world.promote("3")
    real = closed_mr.write_back

    def crash(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(closed_mr, "write_back", real)
        raise RuntimeError("killed after the push")

    monkeypatch.setattr(closed_mr, "write_back", crash)
    with pytest.raises(RuntimeError):
        world.promote("2")
    assert registry.tags(MODEL, "3")[STATUS] == "mr_opened"

    retry = world.promote("2")

    assert retry.outcome is not None and retry.outcome.value == "unchanged"
    assert retry.closed_mr is not None and (retry.closed_mr.closed_as,
                                            retry.closed_mr.version) == ("replaced", "3")
    assert registry.tags(MODEL, "3")[STATUS] == "closed"
    assert registry.tags(MODEL, "2")[STATUS] == "mr_opened" and retry.mr_iid == newer.mr_iid


@pytest.mark.parametrize(("state", "replaced"), [("opened", True), ("merged", False)])
def test_an_unchanged_mr_replaces_the_rows_version_only_while_open(state: str,
                                                                    replaced: bool) -> None:
    """UNCHANGED with the row still naming another version on the MR is the retry after a
    crash past the push; with the MR merged meanwhile, its own outcome speaks for it."""
    from promoter.core import closed_mr
    from promoter.core.results import DeploymentStatus
    from promoter.ports.git import MergeRequest, Outcome, ProposalResult
    from promoter.ports.pipeline import DeployedState

    mr = MergeRequest(iid=4, id=40, url="local:!4", state=state, source_branch="promote/m/p",
                      target_branch="main", title="t", head_sha="a" * 40)
    before = DeployedState(MODEL, "production", "m", "3", DeploymentStatus.MR_OPENED, 4,
                           "b" * 40)
    found = closed_mr.closed_by(ProposalResult(Outcome.UNCHANGED, mr, "a" * 40, False), before,
                                "2", "version 2 is proposed instead")
    assert (found is not None and found.closed_as == "replaced") is replaced
