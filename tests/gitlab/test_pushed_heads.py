"""One record of the MR heads promoter pushed: both providers write it, the ledger reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promoter.ports.pipeline import DeployedState
from promoter.service.ledger import StateLedger
from tests.gitlab.conftest import ENV, MODEL, NAME, proposal


def test_both_providers_record_the_head_and_model_they_pushed_and_the_ledger_reads_it(
        harness: Any, tmp_path: Path) -> None:
    result = harness.provider.propose(proposal("1"))
    assert result.mr_iid is not None and result.head_sha
    ledger = StateLedger(tmp_path / "state")
    ledger.put(DeployedState(MODEL, ENV, NAME, "1", "mr_opened", result.mr_iid, None))
    deployed = ledger.get(MODEL, ENV)
    assert deployed is not None and deployed.head_sha == result.head_sha
    project = getattr(harness.provider.forge, "project_id", 0)
    assert harness.ledger.pushed_sha(project, result.mr_iid) == result.head_sha
    # The model the head proposes: a late outcome of the MR is that model's, even once the
    # deployment name has changed hands and the ledger row is another model's.
    assert harness.ledger.pushed_proposal(project, result.mr_iid) == ("1", MODEL)


def test_a_head_a_person_pushed_is_not_recorded_as_promoters(harness: Any,
                                                             tmp_path: Path) -> None:
    first = harness.provider.propose(proposal("1"))
    human = harness.human_commit(first.merge_request.source_branch,
                                 f"manifests/{NAME}/overlays/{ENV}/kustomization.yaml", "x: 1\n")
    again = harness.provider.propose(proposal("2"))
    assert again.outcome.value == "human_commits"
    ledger = StateLedger(tmp_path / "state")
    ledger.put(DeployedState(MODEL, ENV, NAME, "2", "mr_opened", again.mr_iid, again.head_sha))
    deployed = ledger.get(MODEL, ENV)
    assert deployed is not None and deployed.head_sha == first.head_sha != human


def test_a_persons_commit_carrying_promoters_message_is_still_theirs(
        standin: Any, tmp_path: Path) -> None:
    """`git commit --amend`, `-C HEAD` or a cherry-pick keep promoter's message and its key
    line. Judged by the message, such a head was promoter's: the job re-run took it as its
    own push (recorded, and later merged as verified), or pushed over it. The head promoter
    recorded pushing decides."""
    from promoter.core.mr_text import commit_message
    from tests.gitlab.conftest import GitLabHarness

    harness = GitLabHarness(standin, tmp_path)
    first = harness.provider.propose(proposal("3", approvals_required=0))
    assert first.mr_iid is not None
    branch = first.merge_request.source_branch if first.merge_request else ""
    sneaked = str(harness.as_user("alice-token").commits.create({
        "branch": branch, "commit_message": commit_message(proposal("3")),
        "actions": [{"action": "create", "file_path": ".gitlab-ci.yml",
                     "content": "job: {script: [curl evil]}\n"}]}).id)

    again = harness.provider.propose(proposal("3", approvals_required=0))
    assert again.outcome.value == "human_commits" and again.head_sha == sneaked
    assert harness.ledger.pushed_sha(harness.provider.forge.project_id, first.mr_iid) == \
        first.head_sha
    assert any("changed by someone" in note for note in harness.notes(first.mr_iid))


def test_a_reviewers_copy_of_promoters_comment_is_left_alone(standin: Any,
                                                            tmp_path: Path) -> None:
    """Comments are matched to promoter's by their marker line, which a pasted copy carries
    too: promoter edited the newest match, the reviewer's, GitLab refused (403) and the job
    was parked. Only promoter's own comment (by its token's user) is edited."""
    from tests.gitlab.conftest import GitLabHarness

    harness = GitLabHarness(standin, tmp_path)
    first = harness.provider.propose(proposal("1"))
    assert first.mr_iid is not None
    own = next(note for note in harness.as_user("bot-token").mergerequests.get(
        first.mr_iid).notes.list(get_all=True)
        if note.author["username"] == "promoter-bot" and "version 1 proposed" in note.body)
    harness.as_user("alice-token").mergerequests.get(first.mr_iid).notes.create(
        {"body": own.body})

    harness.provider.propose(proposal("2"))
    notes = harness.as_user("bot-token").mergerequests.get(first.mr_iid).notes.list(
        get_all=True)
    pasted = [n for n in notes if n.author["username"] == "alice"]
    assert [n.body for n in pasted] == [own.body]                  # untouched
    assert any(n.id == own.id and "version 2 proposed" in n.body for n in notes)
