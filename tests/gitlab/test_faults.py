"""Every injected fault ends in the same state as the fault-free run, with no extra commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promoter.adapters.gitlab import connect
from promoter.adapters.gitlab_provider import GitLabProvider
from promoter.errors import AuthError, TransientError
from promoter.ports.git import ProposalResult
from promoter.state.pushed_heads import PushedHeads
from tests.gitlab.conftest import GitLabHarness, make_standin, proposal
from tests.gitlab.standin.server import StandIn

COMMITS = r"/repository/commits$"
MRS = r"/merge_requests$"
ONE_MR = r"/merge_requests/\d+$"


def scenario(harness: GitLabHarness) -> list[tuple[str, bool, int | None]]:
    """First promotion, the same again, a newer version with auto-merge."""
    results: list[ProposalResult] = [
        harness.provider.propose(proposal("1")),
        harness.provider.propose(proposal("1")),
        harness.provider.propose(proposal("2", auto_merge=True)),
    ]
    return [(r.outcome.value, r.commit_created, r.mr_iid) for r in results]


def supersede_scenario(harness: GitLabHarness) -> list[tuple[str, bool, int | None]]:
    results = [harness.provider.propose(proposal(v)) for v in ("1", "2")]
    return [(r.outcome.value, r.commit_created, r.superseded_iid) for r in results]


def snapshot(standin: StandIn) -> dict[str, Any]:
    repo = standin.repo
    return {
        "commits": repo.count(),
        "commits_created": standin.commits_created,
        "trees": {branch: repo.git("rev-parse", f"{branch}^{{tree}}").strip()
                  for branch in repo.branches()},
        "mrs": [(mr.iid, mr.state, mr.title, mr.description, sorted(mr.labels), mr.auto_merge,
                 [rule["approvals_required"] for rule in mr.rules],
                 sorted(note["body"] for note in mr.notes))
                for mr in standin.project.mrs.values()],
    }


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("clean")
    standin = make_standin(tmp, per_page=2)
    try:
        return scenario(GitLabHarness(standin, tmp)), snapshot(standin)
    finally:
        standin.stop()


FAULTS = [
    pytest.param("POST", COMMITS, "lost", {}, id="commit-response-lost"),
    pytest.param("POST", COMMITS, "lost", {"after": 1}, id="update-commit-response-lost"),
    pytest.param("POST", COMMITS, "502", {"apply": True}, id="commit-applied-then-502"),
    pytest.param("POST", COMMITS, "503", {}, id="commit-503"),
    pytest.param("POST", COMMITS, "429", {"retry_after": 1}, id="commit-429-retry-after"),
    pytest.param("POST", COMMITS, "timeout", {"delay": 2.5}, id="commit-timeout"),
    pytest.param("POST", MRS, "lost", {}, id="mr-create-response-lost"),
    pytest.param("POST", MRS, "502", {"apply": True}, id="mr-create-applied-then-502"),
    pytest.param("PUT", ONE_MR, "lost", {}, id="mr-update-response-lost"),
    pytest.param("POST", r"/notes$", "lost", {}, id="note-create-response-lost"),
    pytest.param("PUT", r"/notes/\d+$", "502", {"apply": True}, id="note-edit-applied-then-502"),
    pytest.param("POST", r"/approval_rules$", "lost", {}, id="approval-rule-response-lost"),
    pytest.param("PUT", r"/merge$", "lost", {}, id="auto-merge-response-lost"),
    pytest.param("GET", r"/repository/tree$", "502", {"times": 2}, id="tree-502-twice"),
    pytest.param("GET", r"/raw$", "429", {"retry_after": 1}, id="file-read-429"),
    pytest.param("GET", MRS, "timeout", {"delay": 2.5}, id="mr-list-timeout"),
    pytest.param("GET", r"/repository/branches/", "503", {"times": 3}, id="branch-read-503s"),
]


@pytest.fixture(scope="module")
def clean_supersede(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("clean-supersede")
    standin = make_standin(tmp, per_page=2)
    try:
        return supersede_scenario(GitLabHarness(standin, tmp, supersede=True)), snapshot(standin)
    finally:
        standin.stop()


SUPERSEDE_FAULTS = [
    pytest.param("PUT", ONE_MR, "lost", {}, id="close-response-lost"),
    # promoter retitles the superseded MR, then closes it: the second PUT's answer lost.
    pytest.param("PUT", ONE_MR, "lost", {"after": 1}, id="close-after-retitle-response-lost"),
    pytest.param("DELETE", r"/repository/branches/", "lost", {}, id="branch-delete-lost"),
    pytest.param("POST", COMMITS, "lost", {"after": 1}, id="new-branch-commit-lost"),
    pytest.param("POST", MRS, "502", {"apply": True, "after": 1}, id="new-mr-applied-then-502"),
]


@pytest.mark.parametrize(("method", "path", "kind", "options"), SUPERSEDE_FAULTS)
def test_supersede_fault_leaves_the_same_end_state(
        clean_supersede: tuple[list[Any], dict[str, Any]], tmp_path: Path, method: str,
        path: str, kind: str, options: dict[str, Any]) -> None:
    expected_results, expected_state = clean_supersede
    standin = make_standin(tmp_path, per_page=2)
    try:
        fault = standin.fault(method, path, kind, **options)
        results = supersede_scenario(GitLabHarness(standin, tmp_path, supersede=True))
        assert fault.hits == 1
        assert results == expected_results and results[1][0] == "superseded"
        assert snapshot(standin) == expected_state
    finally:
        standin.stop()


@pytest.mark.parametrize(("method", "path", "kind", "options"), FAULTS)
def test_fault_leaves_the_same_end_state(clean_run: tuple[list[Any], dict[str, Any]],
                                         tmp_path: Path, method: str, path: str, kind: str,
                                         options: dict[str, Any]) -> None:
    expected_results, expected_state = clean_run
    standin = make_standin(tmp_path, per_page=2)
    try:
        fault = standin.fault(method, path, kind, **options)
        results = scenario(GitLabHarness(standin, tmp_path))
        assert fault.hits >= 1, "the fault was never triggered"
        assert results == expected_results
        assert snapshot(standin) == expected_state   # includes the commit count
    finally:
        standin.stop()


def test_a_long_retry_after_is_handed_to_the_job_queue(standin: StandIn, tmp_path: Path) -> None:
    standin.fault("POST", COMMITS, "429", retry_after=120, times=10)
    forge = connect(standin.base_url, "bot-token", "group/gitops", timeout_seconds=5,
                    backoff_seconds=0.01, max_wait_seconds=5)
    provider = GitLabProvider(forge, backoff_seconds=0.01)
    with pytest.raises(TransientError) as raised:
        provider.propose(proposal("1"))
    assert raised.value.retry_after == 120
    assert standin.repo.count() == 1 and not standin.project.mrs


def test_a_bad_token_is_an_auth_error_that_does_not_echo_it(standin: StandIn) -> None:
    forge = connect(standin.base_url, "not-the-token-s3cr3t", "group/gitops", timeout_seconds=5)
    with pytest.raises(AuthError) as raised:
        GitLabProvider(forge).propose(proposal("1"))
    assert "401" in str(raised.value) and "s3cr3t" not in str(raised.value)
    assert "PROMOTER_GITLAB_TOKEN" in str(raised.value)


def test_an_unknown_project_says_which(standin: StandIn) -> None:
    forge = connect(standin.base_url, "bot-token", "group/missing", timeout_seconds=5)
    with pytest.raises(Exception, match="group/missing"):
        GitLabProvider(forge).propose(proposal("1"))


def test_gitlab_free_states_approvals_in_the_mr(tmp_path: Path) -> None:
    standin = make_standin(tmp_path, profile="ce-17")
    try:
        result = GitLabHarness(standin, tmp_path).provider.propose(proposal("1"))
        assert result.outcome.value == "created" and not result.approvals_enforced
        assert any("not enforced" in warning for warning in result.warnings)
        notes = [n["body"] for n in standin.project.mrs[1].notes]
        assert any("requires **2** approval(s)" in body for body in notes)
    finally:
        standin.stop()


def test_provider_from_settings_reads_the_token_from_the_environment(standin: StandIn,
                                                                     tmp_path: Path) -> None:
    from promoter.adapters import gitlab_provider as gitlab_adapter
    from promoter.errors import ConfigError
    from promoter.settings import load_settings

    environ = {"PROMOTER_GITLAB_URL": standin.base_url, "PROMOTER_GITLAB_PROJECT": "group/gitops",
               "PROMOTER_STATE_DIR": str(tmp_path / "state")}
    with pytest.raises(ConfigError, match="PROMOTER_GITLAB_TOKEN"):
        gitlab_adapter.from_settings(load_settings(None, environ))
    settings = load_settings(None, {**environ, "PROMOTER_GITLAB_TOKEN": "bot-token"})
    assert settings.git.provider == "gitlab"
    provider = gitlab_adapter.from_settings(settings)
    client = provider.forge._gl
    assert client.ssl_verify is True and client.timeout == 30   # TLS verified, bounded waits
    result = provider.propose(proposal("1"))
    assert result.outcome.value == "created"
    ledger = PushedHeads.in_state_dir(tmp_path / "state")
    assert result.mr_iid is not None
    assert ledger.pushed_sha(42, result.mr_iid) == result.head_sha


def test_auto_merge_waits_out_gitlabs_mergeability_check(tmp_path: Path) -> None:
    # GitLab 10/11 answer 406 while checking (17 accepts; test_versions covers every era).
    standin = make_standin(tmp_path, profile="ee-legacy")
    standin.checking_reads = 2        # GitLab is still checking the new MR: merge answers 406
    try:
        harness = GitLabHarness(standin, tmp_path)
        result = harness.provider.propose(proposal("1", auto_merge=True, approvals_required=0))
        assert result.warnings == ()
        merged = harness.provider.get(result.mr_iid or 0)
        assert merged.state == "merged" and merged.merge_commit_sha == standin.repo.head("main")
        assert ("PUT", "/api/v4/projects/42/merge_requests/1/merge") in standin.requests
    finally:
        standin.stop()


def test_auto_merge_refused_for_good_is_a_warning(tmp_path: Path) -> None:
    standin = make_standin(tmp_path)
    try:
        harness = GitLabHarness(standin, tmp_path)
        first = harness.provider.propose(proposal("1", approvals_required=0))
        standin.api.run_pipeline(first.mr_iid or 0, "failed")
        result = harness.provider.propose(proposal("1", auto_merge=True, approvals_required=0))
        assert result.outcome.value == "unchanged"
        assert result.warnings == ("auto-merge not set on !1: the MR cannot be merged yet",)
        assert harness.provider.get(first.mr_iid or 0).state == "opened"
    finally:
        standin.stop()
