"""Approver groups per environment reach GitLab's approval rule as user and group ids (EE);
on CE, which has no rules, the requirement is stated in the MR as before."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.stack import make_standin
from tests.gitlab.conftest import GitLabHarness, proposal


def rule_of(harness: GitLabHarness, iid: int) -> dict[str, object]:
    [rule] = [r for r in harness.standin.project.mrs[iid].rules if r["name"] == "promoter"]
    return rule


def test_the_rule_names_the_approvers_and_follows_changes(tmp_path: Path) -> None:
    standin = make_standin(tmp_path, profile="ee-17")
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", approver_user_ids=(7, 3),
                                                   approver_group_ids=(12,)))
        assert result.mr_iid is not None
        rule = rule_of(harness, result.mr_iid)
        assert rule["approvals_required"] == 2
        assert [u["id"] for u in rule["users"]] == [3, 7]            # type: ignore[attr-defined]
        assert [g["id"] for g in rule["groups"]] == [12]            # type: ignore[attr-defined]
        again = harness.provider.propose(proposal("2", approver_user_ids=(3,),
                                                  approver_group_ids=(12, 40)))
        rule = rule_of(harness, again.mr_iid or 0)
        assert [u["id"] for u in rule["users"]] == [3]              # type: ignore[attr-defined]
        assert [g["id"] for g in rule["groups"]] == [12, 40]        # type: ignore[attr-defined]
    finally:
        standin.stop()


def test_ce_states_the_requirement_instead(tmp_path: Path) -> None:
    standin = make_standin(tmp_path, profile="ce-17")
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", approver_group_ids=(12,)))
        assert result.mr_iid is not None and not result.approvals_enforced
        assert standin.project.mrs[result.mr_iid].rules == []
    finally:
        standin.stop()
