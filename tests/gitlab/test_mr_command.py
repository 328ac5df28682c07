"""`promoter mr ...` on the embedded local provider: default remote under the state dir."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from promoter.adapters import localgit
from promoter.errors import TransientError, UserError
from promoter.ports.pipeline import DeployedState
from promoter.settings import load_settings
from tests.gitlab import trees
from tests.gitlab.conftest import ENV, MODEL, NAME, LocalHarness, git, proposal
from tests.gitlab.test_mr_sweep import Promoter

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def state_dir(run_cli: Run, tmp_path: Path) -> Path:
    return tmp_path / "state"   # run_cli sets PROMOTER_STATE_DIR to this


def propose(state_dir: Path, version: str, **changes: object) -> int:
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(state_dir)})
    result = localgit.from_settings(settings).propose(proposal(version, **changes))
    assert result.mr_iid is not None
    return result.mr_iid


def test_review_and_merge_from_the_command_line(run_cli: Run, state_dir: Path) -> None:
    iid = propose(state_dir, "1")
    code, out, _ = run_cli("mr", "list", "--output", "json")
    listed = json.loads(out)
    assert code == 0 and [mr["iid"] for mr in listed] == [iid]
    assert listed[0]["source_branch"] == f"promote/{NAME}/{ENV}"

    code, _, err = run_cli("mr", "merge", str(iid))
    assert code == 1 and "2 more approval" in err

    for user in ("alice", "bob"):
        assert run_cli("mr", "approve", str(iid), "--user", user)[0] == 0
    code, out, _ = run_cli("mr", "merge", str(iid), "--user", "alice", "--output", "json")
    merged = json.loads(out)
    assert code == 0 and merged["state"] == "merged"

    remote = state_dir / "gitops.git"          # created on first use
    head = subprocess.run(["git", "rev-parse", "main"], cwd=remote, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert head == merged["merge_commit_sha"]
    shown = subprocess.run(["git", "show", f"main:manifests/{NAME}/overlays/{ENV}/replicas.yaml"],
                           cwd=remote, capture_output=True, text=True, check=True).stdout
    assert "replicas: 2" in shown

    code, out, _ = run_cli("mr", "show", str(iid), "--output", "json")
    shown_mr = json.loads(out)
    assert shown_mr["approved_by"] == ["alice", "bob"] and shown_mr["notes"]


def test_close_is_respected_and_approve_guards_the_sha(run_cli: Run, state_dir: Path) -> None:
    iid = propose(state_dir, "1")
    code, _, err = run_cli("mr", "approve", str(iid), "--sha", "0" * 40)
    assert code == 1 and "head is" in err
    assert run_cli("mr", "close", str(iid), "--user", "carol")[0] == 0

    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(state_dir)})
    again = localgit.from_settings(settings).propose(proposal("1"))
    assert again.outcome.value == "closed_by_human"
    code, out, _ = run_cli("mr", "list")
    assert code == 0 and "no opened merge requests" in out


def test_auto_merge_merges_once_approved(run_cli: Run, state_dir: Path) -> None:
    iid = propose(state_dir, "1", auto_merge=True, approvals_required=1)
    code, out, _ = run_cli("mr", "approve", str(iid), "--user", "alice", "--output", "json")
    assert code == 0 and json.loads(out)["state"] == "merged"


def test_unknown_mr_is_a_user_error(run_cli: Run, state_dir: Path) -> None:
    code, _, err = run_cli("mr", "show", "99")
    assert code == 1 and "!99 does not exist" in err


def test_a_changed_remote_setting_is_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_settings(None, {"PROMOTER_STATE_DIR": str(state)})
    localgit.from_settings(first).propose(proposal("1"))
    other = tmp_path / "other.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(other)], check=True)
    subprocess.run(["git", "push", "-q", str(other), "main"], cwd=state / "gitops.git",
                   check=True)
    moved = load_settings(None, {"PROMOTER_STATE_DIR": str(state),
                                 "PROMOTER_GIT_REMOTE": str(other)})
    localgit.from_settings(moved).propose(proposal("2"))
    branches = subprocess.run(["git", "branch", "--list"], cwd=other, capture_output=True,
                              text=True, check=True).stdout
    assert f"promote/{NAME}/{ENV}" in branches


def _reviewers(state_dir: Path) -> tuple[localgit.LocalGitProvider, localgit.LocalGitProvider,
                                         list[tuple[str, str]]]:
    """Two providers on one state dir (two `promoter mr` commands) and the events they emit."""
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(state_dir)})
    events: list[tuple[str, str]] = []
    merger = localgit.from_settings(settings, on_event=lambda e: events.append(("A", e.action)))
    closer = localgit.from_settings(settings, on_event=lambda e: events.append(("B", e.action)))
    return merger, closer, events


def _approved(provider: localgit.LocalGitProvider) -> int:
    iid = provider.propose(proposal("1")).mr_iid
    assert iid is not None
    for user in ("alice", "bob"):
        provider.approve(iid, user)
    return iid


def test_a_close_while_the_merge_lands_is_refused(tmp_path: Path) -> None:
    merger, closer, events = _reviewers(tmp_path / "state")
    iid = _approved(merger)
    real_push = merger.forge.repo.push
    refusals: list[str] = []

    def push(*args: object, **kwargs: object) -> None:  # `mr close` runs during the push
        with pytest.raises(UserError) as refused:
            closer.close(iid, "carol")
        refusals.append(str(refused.value))
        real_push(*args, **kwargs)  # type: ignore[arg-type]

    merger.forge.repo.push = push  # type: ignore[method-assign]
    assert merger.merge(iid, "alice").state == "merged"
    assert refusals and "being merged" in refusals[0]
    assert ("B", "close") not in events and events[-1] == ("A", "merge")


def test_a_merge_after_a_close_is_refused_and_lands_nothing(tmp_path: Path) -> None:
    merger, closer, events = _reviewers(tmp_path / "state")
    iid = _approved(merger)
    target = merger.forge.branch_head("main")
    real_open = merger._open

    def open_then_closed(number: int) -> object:  # `mr close` wins right after merge read it
        read = real_open(number)
        closer.close(number, "carol")
        return read

    merger._open = open_then_closed  # type: ignore[method-assign,assignment]
    with pytest.raises(UserError, match="was closed meanwhile"):
        merger.merge(iid, "alice")
    assert merger.get(iid).state == "closed" and merger.forge.branch_head("main") == target
    assert ("A", "merge") not in events and events[-1] == ("B", "close")


def test_a_failed_merge_leaves_the_mr_open(tmp_path: Path) -> None:
    merger, closer, _ = _reviewers(tmp_path / "state")
    iid = _approved(merger)

    def push(*args: object, **kwargs: object) -> None:
        raise TransientError("the remote refused the push")

    merger.forge.repo.push = push  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        merger.merge(iid, "alice")
    assert merger.get(iid).state == "opened"
    assert closer.close(iid, "carol").state == "closed"


def test_no_second_mr_opens_on_a_branch_while_its_mr_is_being_merged(tmp_path: Path) -> None:
    """The merge deletes the source branch once it lands: a promotion opening a second MR on
    that branch meanwhile would lose its head, so it is told to come back (and retries)."""
    merger, other, _ = _reviewers(tmp_path / "state")
    iid = _approved(merger)
    real_push = merger.forge.repo.push
    refusals: list[str] = []

    def push(*args: object, **kwargs: object) -> None:  # a promotion runs during the push
        with pytest.raises(TransientError) as refused:
            other.forge.create_mr(proposal("2"), "v2")
        refusals.append(str(refused.value))
        real_push(*args, **kwargs)  # type: ignore[arg-type]

    merger.forge.repo.push = push  # type: ignore[method-assign]
    assert merger.merge(iid, "alice").state == "merged"
    assert refusals and "already exists" in refusals[0]
    assert [mr.iid for mr in other.forge.merge_requests(proposal("2").branch)] == [iid]


def _merge_whose_last_write_fails(provider: localgit.LocalGitProvider, iid: int) -> None:
    """`mr merge` lands on the target branch, then its write of "merged" fails (a state
    database blip; a kill there leaves the same): the MR stays locked."""
    store = provider.forge.store
    real = store.transition

    def transition(number: int, before: str, after: str, **fields: object) -> bool:
        if (before, after) == ("locked", "merged"):
            raise TransientError("the state database is unusable")
        return real(number, before, after, **fields)

    store.transition = transition  # type: ignore[method-assign]
    try:
        with pytest.raises(TransientError):
            provider.merge(iid, "alice")
    finally:
        store.transition = real  # type: ignore[method-assign]
    assert provider.get(iid).state == "locked"


def test_a_merge_that_landed_but_was_not_recorded_is_recorded_by_the_next_command(
        tmp_path: Path) -> None:
    merger, closer, events = _reviewers(tmp_path / "state")
    iid = _approved(merger)
    _merge_whose_last_write_fails(merger, iid)
    with pytest.raises(UserError, match="was merged"):
        closer.close(iid, "carol")
    merged = closer.get(iid)
    assert merged.state == "merged" and merged.merge_commit_sha == closer.forge.branch_head("main")
    assert [action for _, action in events].count("merge") == 1 and ("B", "close") not in events
    assert merger.propose(proposal("2")).mr_iid not in (None, iid)   # the branch is free again


def test_a_promotion_records_a_merge_left_locked_instead_of_being_refused(
        tmp_path: Path) -> None:
    merger, _, events = _reviewers(tmp_path / "state")
    iid = _approved(merger)
    _merge_whose_last_write_fails(merger, iid)
    result = merger.propose(proposal("2"))
    assert merger.get(iid).state == "merged" and ("A", "merge") in events
    assert result.mr_iid not in (None, iid)


def test_a_lock_left_by_a_merge_that_never_landed_is_opened_again_once_stale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    merger, closer, _ = _reviewers(tmp_path / "state")
    iid = _approved(merger)
    assert merger.forge.store.transition(iid, "opened", "locked")  # then the merge was killed
    with pytest.raises(UserError, match="being merged"):
        closer.close(iid, "carol")                                 # still within a merge's time
    monkeypatch.setattr(localgit, "STALE_LOCK_SECONDS", 0.0)       # ... and now long past it
    assert closer.close(iid, "carol").state == "closed"


# --- A head someone else pushed onto promoter's MR. Here promoter is the forge: approvals
# count only for the head they were given for, and promoter's own `mr approve` / `mr merge`
# refuse a head it did not push; a close (or a merge locked before that refusal) settling
# such a head is recorded as foreign, as GitLab's hook records it.

BRANCH = f"promote/{NAME}/{ENV}"
REPLICAS = f"manifests/{NAME}/overlays/{ENV}/replicas.yaml"


def _approved_mr(tmp_path: Path) -> tuple[LocalHarness, Promoter, int, str]:
    """promoter's MR for version 3, approved by alice and bob, its outcomes recorded as
    `promoter mr` records them (the provider's events): (harness, promoter, iid, its head)."""
    harness = LocalHarness(tmp_path)
    promoter = Promoter(harness, tmp_path)
    harness.provider._on_event = promoter.outcomes
    result = harness.provider.propose(proposal("3"))
    assert result.mr_iid is not None and result.head_sha is not None
    promoter.ledger.put(DeployedState(MODEL, ENV, NAME, "3", "mr_opened", result.mr_iid))
    for user in ("alice", "bob"):
        harness.approve(result.mr_iid, user)
    return harness, promoter, result.mr_iid, result.head_sha


def _pushed_by_a_person(harness: LocalHarness) -> str:
    human = harness.human_commit(BRANCH, REPLICAS, trees.REPLICAS.format(name=NAME, replicas=7))
    harness.provider.list_mrs()                  # `promoter mr list`: reads the remote
    return human


def _settled(promoter: Promoter) -> list[tuple[object, ...]]:
    return [(e["event"], e["status"], e.get("head_sha"), e.get("pushed_sha"))
            for e in promoter.audit.entries()
            if str(e["event"]).startswith(("mr.merge", "mr.close"))]


def test_a_head_pushed_over_approvals_has_none_and_is_neither_approved_nor_merged(
        tmp_path: Path) -> None:
    harness, promoter, iid, pushed = _approved_mr(tmp_path)
    target = harness.forge.branch_head("main")
    human = _pushed_by_a_person(harness)
    mr = harness.provider.get(iid)
    assert mr.head_sha == human and mr.approved_by == ()   # alice's and bob's were for promoter's

    with pytest.raises(UserError) as refused:
        harness.provider.merge(iid, "carol")               # `promoter mr merge IID`
    assert "not the commit promoter pushed" in str(refused.value)
    assert human in str(refused.value) and pushed in str(refused.value)
    with pytest.raises(UserError, match="not the commit promoter pushed"):
        harness.provider.approve(iid, "carol")
    still = harness.provider.get(iid)
    assert still.state == "opened" and still.approved_by == ()
    assert harness.forge.branch_head("main") == target     # nothing landed
    assert _settled(promoter) == [] and promoter.tags.live == {}
    assert "merged" not in [t["status"] for _, _, _, t in promoter.tags.written]

    # promoter's commit put back on the branch: the approvals given for it count again, and
    # merging it is promoter's verified merge.
    git("push", "-q", "--force", "origin", f"{pushed}:refs/heads/{BRANCH}", cwd=harness.human)
    harness.provider.list_mrs()
    assert harness.provider.get(iid).approved_by == ("alice", "bob")
    assert harness.provider.merge(iid, "carol").state == "merged"
    assert _settled(promoter) == [("mr.merge", "merged", pushed, None)]
    assert promoter.tags.live == {(MODEL, ENV): "3"}
    shown = git("show", f"main:{REPLICAS}", cwd=harness.remote)
    assert "replicas: 4" in shown and "replicas: 7" not in shown


def test_a_close_of_a_head_someone_else_pushed_is_recorded_as_foreign(tmp_path: Path) -> None:
    harness, promoter, iid, pushed = _approved_mr(tmp_path)
    human = _pushed_by_a_person(harness)
    assert harness.provider.close(iid, "carol").state == "closed"   # `promoter mr close IID`
    assert _settled(promoter) == [("mr.close_foreign", "closed", human, pushed)]
    assert promoter.status() == "closed" and promoter.tags.live == {}


def test_a_merge_of_someone_elses_head_left_locked_is_recorded_as_foreign(
        tmp_path: Path) -> None:
    """A merge of the head a person pushed, locked and landed by an earlier promoter (one
    that did not refuse it) and killed before it recorded "merged": the next command records
    it as what it is, never as promoter's deployment."""
    harness, promoter, iid, pushed = _approved_mr(tmp_path)
    human = _pushed_by_a_person(harness)
    provider = harness.provider
    assert provider.forge.store.transition(iid, "opened", "locked", sha=human)
    provider._land(provider.get(iid), human)
    with pytest.raises(UserError, match="was merged"):
        provider.close(iid, "carol")
    assert _settled(promoter) == [("mr.merge_foreign", "merged_unverified", human, pushed)]
    assert promoter.status() == "merged_unverified" and promoter.tags.live == {}


def test_promoters_own_update_asks_for_approvals_again_and_merges(tmp_path: Path) -> None:
    harness, promoter, iid, _ = _approved_mr(tmp_path)
    updated = harness.provider.propose(proposal("4"))     # a newer version: the MR updated
    assert updated.mr_iid == iid and updated.head_sha is not None
    promoter.ledger.put(DeployedState(MODEL, ENV, NAME, "4", "mr_opened", iid))
    assert harness.provider.get(iid).approved_by == ()    # given for version 3's head
    with pytest.raises(UserError, match="2 more approval"):
        harness.provider.merge(iid, "carol")
    for user in ("alice", "bob"):
        harness.approve(iid, user)
    assert harness.provider.merge(iid, "carol").state == "merged"
    assert _settled(promoter) == [("mr.merge", "merged", updated.head_sha, None)]
    assert promoter.tags.live == {(MODEL, ENV): "4"}
