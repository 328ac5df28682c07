"""Approver groups per environment reach GitLab's approval rule as user and group ids (EE);
on CE, which has no rules, the requirement is stated in the MR as before."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def _project_rule(users: list[int], groups: list[int], required: int = 2,
                  hidden: bool = False) -> dict[str, object]:
    """A project approval rule for the target branch, as ``GET …/approval_rules`` lists it
    (doc/api/merge_request_approvals.md, "Get merge request level rules"): ``users`` and
    ``groups`` are objects with their ids, ``eligible_approvers`` the users among them."""
    return {"id": 7, "name": "production", "approvals_required": required,
            "rule_type": "regular", "users": [{"id": u} for u in users],
            "groups": [{"id": g} for g in groups],
            "eligible_approvers": [{"id": u} for u in users], "source_rule": None,
            "contains_hidden_groups": hidden, "overridden": False}


@pytest.mark.parametrize("rule", [
    _project_rule([], []),                   # "any two": anyone may approve
    _project_rule([17, 99], [42]),           # a user the environment does not name
    _project_rule([17], [42, 50]),           # a group the environment does not name
    _project_rule([17], [42], hidden=True),  # groups the token cannot see
    _project_rule([17], [42], required=1),   # fewer than the count
], ids=["anyone", "other-user", "other-group", "hidden-groups", "fewer"])
def test_a_project_rule_not_limited_to_the_approvers_is_not_enforcement(
        tmp_path: Path, rule: dict[str, object]) -> None:
    """With "Prevent editing approval rules in merge requests" GitLab refuses promoter's rule:
    the environment's approvers then hold only if a project rule requires the count from
    them alone. Otherwise the MR is treated as unenforced: stated, no auto-merge."""
    standin = make_standin(tmp_path, profile="ee-17")
    try:
        standin.project.approval_settings["disable_overriding_approvers_per_merge_request"] = True
        standin.project.approval_rules.append(rule)
        standin.new_mr_pipeline = "running"
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", approver_user_ids=(17,),
                                                   approver_group_ids=(42,), auto_merge=True))
        iid = result.mr_iid
        assert iid is not None and not result.approvals_enforced
        mr = standin.project.mrs[iid]
        assert [r["name"] for r in mr.rules] == ["production"]     # promoter's was refused
        assert not mr.auto_merge
        assert any(w.startswith(f"auto-merge not set on !{iid}") for w in result.warnings)
        assert any(w.startswith("approval rules unavailable") for w in result.warnings)
        [note] = [n for n in harness.notes(iid) if "approval(s). GitLab does not" in n]
        assert "GitLab user ids 17 and members of the groups with ids 42" in note
        harness.approve(iid, "alice")
        harness.approve(iid, "bob")
        standin.api.run_pipeline(iid, "success")
        assert standin.project.mrs[iid].state == "opened"          # nobody's auto-merge
    finally:
        standin.stop()


@pytest.mark.parametrize("users,groups", [([17], [42]), ([17], []), ([], [42])])
def test_a_project_rule_requiring_the_count_from_the_approvers_is_enforcement(
        tmp_path: Path, users: list[int], groups: list[int]) -> None:
    standin = make_standin(tmp_path, profile="ee-17")
    try:
        standin.project.approval_settings["disable_overriding_approvers_per_merge_request"] = True
        standin.project.approval_rules.append(_project_rule(users, groups))
        standin.new_mr_pipeline = "running"
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", approver_user_ids=(17,),
                                                   approver_group_ids=(42,), auto_merge=True))
        assert result.mr_iid is not None
        assert result.approvals_enforced and result.warnings == ()
        assert standin.project.mrs[result.mr_iid].auto_merge
    finally:
        standin.stop()
