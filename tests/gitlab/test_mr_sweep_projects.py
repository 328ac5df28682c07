"""The MR sweep after ``git.project`` changed: iids restart per GitLab project, so a ledger row
or a left-MR note of the old project must not be read by its iid in the new one (that reads
another MR, and settles or records the wrong thing). Two stand-ins are two GitLab projects
(ids 41 and 42) over one promoter state; promoter is pointed at one, then the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.state.db import StateDB
from tests.gitlab.conftest import ENV, NAME, GitLabHarness, make_standin
from tests.gitlab.standin.server import StandIn
from tests.gitlab.test_mr_sweep import Promoter

OLD, NEW = 41, 42


@pytest.fixture
def projects(tmp_path: Path) -> Iterator[dict[int, StandIn]]:
    servers = {}
    for project in (OLD, NEW):
        (tmp_path / str(project)).mkdir()
        servers[project] = make_standin(tmp_path / str(project), project_id=project)
    yield servers
    for server in servers.values():
        server.stop()


def pointed_at(projects: dict[int, StandIn], project: int, tmp: Path) -> Promoter:
    """promoter with ``git.project`` set to ``project`` (its hooks lost), over one state."""
    promoter = Promoter(GitLabHarness(projects[project], tmp), tmp)
    assert promoter.project_id == project
    return promoter


def merges(promoter: Promoter) -> list[tuple[int, str]]:
    return [(entry["iid"], entry["version"]) for entry in promoter.entries("mr.merge")]


def test_a_left_mr_of_the_old_project_is_not_read_as_the_new_projects_mr(
        projects: dict[int, StandIn], tmp_path: Path) -> None:
    """Old: the note of the old project's !1 read the new project's !1, so its outcome
    settled the note (the old merge was never recorded), and the note of !2 was dropped as an
    MR gone from the forge. Each is another project's MR: left alone, reported, and recorded
    once promoter is pointed at that project again."""
    old = pointed_at(projects, OLD, tmp_path)
    iid, head = old.opened("3")
    old.harness.merge(iid, head)             # its hook is lost
    old.opened("4")                          # the row leaves !1 unrecorded

    new = pointed_at(projects, NEW, tmp_path)
    new_iid, new_head = new.opened("5")
    assert new_iid == iid                    # iids restart in the new project
    new.harness.merge(new_iid, new_head)     # its hook is lost too
    report = new.sweep()
    assert report.recorded == [{"iid": new_iid, "name": NAME, "env": ENV, "action": "merge"}]
    assert merges(new) == [(new_iid, "5")]
    assert report.other_project == [{"project": OLD, "iid": 1, "name": NAME, "env": ENV},
                                    {"project": OLD, "iid": 2, "name": NAME, "env": ENV}]
    assert report.gone == [] and report.failures == []
    assert new.sweep().other_project == report.other_project   # still waiting, every pass

    back = pointed_at(projects, OLD, tmp_path)
    report = back.sweep()
    assert {"iid": iid, "name": NAME, "env": ENV, "action": "merge"} in report.recorded
    assert merges(back) == [(new_iid, "5"), (iid, "3")]   # each for its own version
    assert report.other_project == []        # the row's merge in the new project is recorded


def test_a_row_following_an_old_project_mr_is_not_read_in_the_new_project(
        projects: dict[int, StandIn], tmp_path: Path) -> None:
    """Old: the row's !1 was read in the new project (a failure every pass while it had no
    !1), and the new project's !1 was taken for the same MR, so the row moved to it without
    noting the old !1, whose merge was then never recorded."""
    old = pointed_at(projects, OLD, tmp_path)
    iid, head = old.opened("3")
    old.harness.merge(iid, head)             # its hook is lost

    new = pointed_at(projects, NEW, tmp_path)
    report = new.sweep()
    assert report.failures == [] and report.recorded == []
    assert report.other_project == [{"project": OLD, "iid": iid, "name": NAME, "env": ENV}]
    new_iid, _ = new.opened("4")             # the row moves to the new project's !1
    assert new_iid == iid
    assert new.sweep().other_project == [{"project": OLD, "iid": iid, "name": NAME,
                                          "env": ENV}]
    assert merges(new) == []

    back = pointed_at(projects, OLD, tmp_path)
    assert back.sweep().recorded == [{"iid": iid, "name": NAME, "env": ENV, "action": "merge"}]
    assert merges(back) == [(iid, "3")]      # the old project's version, not the row's 4
    assert back.status() == "mr_opened"      # the row still follows the new project's !1


def test_a_note_written_before_projects_were_recorded_is_read_as_the_current_projects(
        projects: dict[int, StandIn], tmp_path: Path) -> None:
    """Upgrade: notes keyed ``mr.left.<iid>`` and rows without a project, as an older
    promoter wrote them, are followed in the configured project as before, and settled."""
    promoter = pointed_at(projects, NEW, tmp_path)
    iid, head = promoter.opened("3")
    promoter.harness.merge(iid, head)        # its hook is lost
    promoter.opened("4")
    legacy(promoter.ledger.db)
    assert left_notes(promoter.ledger.db) == [f"mr.left.{iid}"]

    report = promoter.sweep()
    assert report.recorded == [{"iid": iid, "name": NAME, "env": ENV, "action": "merge"}]
    assert report.other_project == []
    assert merges(promoter) == [(iid, "3")]
    assert left_notes(promoter.ledger.db) == []


def legacy(db: StateDB) -> None:
    """The state as an older promoter left it: notes by bare iid, rows without a project."""
    def rewrite(conn: object) -> None:
        execute = conn.execute  # type: ignore[attr-defined]
        for key, value in execute("SELECT key, value FROM state_meta WHERE key LIKE "
                                  "'mr.left.%'").fetchall():
            execute("DELETE FROM state_meta WHERE key = ?", (key,))
            execute("INSERT INTO state_meta (key, value) VALUES (?, ?)",
                    (f"mr.left.{str(key).rsplit('.', 1)[1]}", value))
        execute("UPDATE deployments SET mr_project = NULL")

    db.write(rewrite)


def left_notes(db: StateDB) -> list[str]:
    return sorted(str(key) for (key,) in db.read(lambda conn: conn.execute(
        "SELECT key FROM state_meta WHERE key LIKE 'mr.left.%'").fetchall()))
