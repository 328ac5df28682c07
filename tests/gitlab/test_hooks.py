"""GitLab webhooks from the stand-in, over real HTTP, into promoter's handler."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from promoter.core.mr_events import ForgeEvent, MergeRequestEvent, PipelineEvent
from promoter.errors import AuthError, PermanentError, PromoterError, TransientError, UserError
from promoter.ports.git import Outcome
from promoter.secret_settings import Secret
from promoter.service.app import create_app
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler, starlette_endpoint
from promoter.service.queue import JobQueue
from promoter.settings import load_settings
from tests.fixtures.failing_state import (
    WRITES,
    FailingWrites,
    assert_unavailable_and_not_ready,
    post_then_probe,
    posts_then_probes,
)
from tests.gitlab import trees
from tests.gitlab.conftest import ENV, NAME, GitLabHarness, make_standin, proposal
from tests.gitlab.standin.server import StandIn

TOKEN = "hook-s3cret"


class Receiver:
    """A real HTTP server that hands every POST to the framework-agnostic handler."""

    def __init__(self, handler: GitLabHookHandler) -> None:
        self.handler = handler
        outer = self

        class Handle(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = outer.handler.handle(dict(self.headers.items()), body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/gitlab"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Setup:
    def __init__(self, standin: StandIn, tmp: Path) -> None:
        self.standin = standin
        self.harness = GitLabHarness(standin, tmp)
        self.events: list[ForgeEvent] = []
        self.failures: list[Exception] = []
        self.deliveries = DeliveryLog(tmp / "state")
        self.handler = GitLabHookHandler(Secret(TOKEN), self.deliveries,
                                         self.harness.ledger.pushed, self.on_event,
                                         own_username=self.harness.provider.own_username,
                                         counted_approvals=self.harness.provider.forge.counted_approvals)
        self.receiver = Receiver(self.handler)
        standin.hook_url, standin.hook_token = self.receiver.url, TOKEN

    def on_event(self, event: ForgeEvent) -> None:
        if self.failures:
            raise self.failures.pop()
        self.events.append(event)

    def answers(self) -> list[tuple[int, Any]]:
        return [(d.status, d.response) for d in self.standin.deliveries]


@pytest.fixture
def setup(standin: StandIn, tmp_path: Path) -> Iterator[Setup]:
    built = Setup(standin, tmp_path)
    yield built
    built.receiver.stop()


def test_approvals_and_auto_merge_reach_promoter(setup: Setup) -> None:
    result = setup.harness.provider.propose(proposal("1", auto_merge=True))
    assert result.mr_iid is not None
    setup.harness.approve(result.mr_iid, "alice")
    assert setup.events == []                       # one of two approvals: nothing to act on
    setup.harness.approve(result.mr_iid, "bob")     # all approvals met → GitLab auto-merges

    assert [e.action for e in setup.events if isinstance(e, MergeRequestEvent)] == \
        ["approved", "merge"]
    merged = setup.events[-1]
    assert isinstance(merged, MergeRequestEvent)
    assert (merged.name, merged.env, merged.iid) == (NAME, ENV, result.mr_iid)
    assert merged.head_sha == result.head_sha and merged.merge_commit_sha
    assert setup.standin.repo.head("main") == merged.merge_commit_sha


def _approved_events(setup: Setup) -> list[tuple[str, str | None]]:
    return [(e.action, e.user) for e in setup.events if isinstance(e, MergeRequestEvent)]


def test_on_ce_one_approval_of_two_is_not_approved(tmp_path: Path) -> None:
    """GitLab CE/Free sends "approved" on every approval (no approval rules: one is enough to
    it); the environment's count is the one promoter stated in the MR. Before, alice's approval
    alone was accepted, and MLflow, the audit and the ledger said "approved"."""
    standin = make_standin(tmp_path, per_page=2, profile="ce-17")
    built = Setup(standin, tmp_path)
    try:
        result = built.harness.provider.propose(proposal("1", approvals_required=2))
        assert result.mr_iid is not None and not result.approvals_enforced
        built.harness.approve(result.mr_iid, "alice")
        first = standin.deliveries[-1]
        assert first.payload["object_attributes"]["action"] == "approved"   # CE's hook
        assert first.status == 200 and first.response["status"] == "ignored"
        assert first.response["reason"].startswith("1 of 2 required approvals")
        assert built.events == []
        built.harness.approve(result.mr_iid, "bob")
        assert standin.deliveries[-1].response["status"] == "accepted"
        assert _approved_events(built) == [("approved", "bob")]
    finally:
        built.receiver.stop()
        standin.stop()


def test_on_ce_a_failed_approvals_read_is_retried_not_taken_as_approved(
        tmp_path: Path) -> None:
    """The read that counts CE's approvals fails like any failure while acting: a 5xx, the
    delivery released, so GitLab's retry of it acts once the read works."""
    standin = make_standin(tmp_path, per_page=2, profile="ce-17")
    built = Setup(standin, tmp_path)
    try:
        result = built.harness.provider.propose(proposal("1", approvals_required=1))
        assert result.mr_iid is not None
        standin.fault("GET", r"/approvals$", "503", times=100)
        built.harness.approve(result.mr_iid, "alice")
        failed = standin.deliveries[-1]
        assert failed.status == 503 and failed.response["error"], failed.response
        assert built.events == []
        standin.faults.clear()
        again = standin.redeliver(failed)
        assert again.status == 200 and again.response["status"] == "accepted"
        assert _approved_events(built) == [("approved", "alice")]
    finally:
        built.receiver.stop()
        standin.stop()


def test_on_premium_approved_is_taken_as_gitlab_sends_it(standin: StandIn,
                                                          tmp_path: Path) -> None:
    """Premium sends "approved" once approvals_left is zero; its approvals_required sums the
    rules, which one approver can meet together (a project rule and promoter's, one approval
    each): comparing that sum with the approvers would refuse a real approval."""
    standin.project.approval_rules.append({
        "id": 7, "name": "production", "approvals_required": 1, "rule_type": "regular",
        "users": [], "groups": [], "eligible_approvers": [], "source_rule": None,
        "contains_hidden_groups": False, "overridden": False})
    built = Setup(standin, tmp_path)
    try:
        result = built.harness.provider.propose(proposal("1", approvals_required=1))
        assert result.mr_iid is not None and result.approvals_enforced
        built.harness.approve(result.mr_iid, "alice")
        approved = standin.deliveries[-1]
        assert approved.payload["object_attributes"]["action"] == "approved"
        assert built.harness.provider.get(result.mr_iid).approvals_required == 2
        assert approved.response["status"] == "accepted"
        assert _approved_events(built) == [("approved", "alice")]
    finally:
        built.receiver.stop()


def test_pipeline_hook_is_parsed_and_accepted(setup: Setup) -> None:
    result = setup.harness.provider.propose(proposal("1"))
    assert result.mr_iid is not None
    setup.standin.api.run_pipeline(result.mr_iid, "failed")

    assert len(setup.events) == 1
    event = setup.events[0]
    assert isinstance(event, PipelineEvent)
    assert (event.status, event.iid, event.head_sha) == ("failed", result.mr_iid, result.head_sha)


def test_pipeline_statuses_and_actions_this_version_does_not_know_are_ignored_not_refused(
        setup: Setup) -> None:
    """GitLab 17.x sends pipeline statuses `canceling` and `waiting_for_callback`; any 4xx
    counts against the hook, which GitLab then disables, merge deliveries and all. Known
    ones are recorded; one newer still, or an unknown MR action, is answered 200 ignored."""
    result = setup.harness.provider.propose(proposal("1"))
    assert result.mr_iid is not None
    setup.standin.api.run_pipeline(result.mr_iid, "canceling")
    canceling = setup.standin.deliveries[-1]
    assert (canceling.status, canceling.response["status"]) == (200, "accepted")
    assert [e.status for e in setup.events if isinstance(e, PipelineEvent)] == ["canceling"]
    newer = json.loads(json.dumps(canceling.payload))
    newer["object_attributes"]["status"] = "drifting"
    answered = setup.standin.deliver("Pipeline Hook", newer)
    assert answered.status == 200 and answered.response == {
        "status": "ignored", "reason": "pipeline status 'drifting' not known"}
    merge = {"object_kind": "merge_request", "user": {"username": "alice"},
             "project": canceling.payload["project"],
             "object_attributes": {"iid": result.mr_iid, "action": "reticulate",
                                   "source_branch": "promote/fraud/production",
                                   "target_branch": "main", "state": "opened"}}
    answered = setup.standin.deliver("Merge Request Hook", merge)
    assert answered.status == 200 and answered.response["status"] == "ignored"
    assert len(setup.events) == 1


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_missing_or_wrong_token_is_401(setup: Setup, token: str | None) -> None:
    setup.standin.hook_token = token
    setup.harness.provider.propose(proposal("1"))
    assert setup.standin.deliveries
    for status, answer in setup.answers():
        assert status == 401 and answer["error"] == "unauthorized" and answer["detail"]
        assert TOKEN not in json.dumps(answer)
    assert setup.events == []


def test_duplicate_delivery_is_acted_on_once(setup: Setup, tmp_path: Path) -> None:
    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    setup.harness.approve(result.mr_iid, "alice")
    approved = setup.standin.deliveries[-1]
    assert approved.response["status"] == "accepted" and len(setup.events) == 1

    again = setup.standin.redeliver(approved)
    assert (again.status, again.response["status"]) == (200, "duplicate")

    # The record is durable: a restarted service still recognises the delivery.
    setup.receiver.handler = GitLabHookHandler(
        Secret(TOKEN), DeliveryLog(tmp_path / "state"),
        setup.harness.ledger.pushed, setup.on_event)
    assert setup.standin.redeliver(approved).response["status"] == "duplicate"
    assert len(setup.events) == 1


def test_a_failed_delivery_is_processed_when_it_is_resent(setup: Setup) -> None:
    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    setup.failures.append(TransientError("MLflow is down"))
    setup.harness.approve(result.mr_iid, "alice")
    failed = setup.standin.deliveries[-1]
    assert failed.status == 503 and failed.response["error"] == "unavailable"

    retried = setup.standin.redeliver(failed)
    assert retried.response["status"] == "accepted" and len(setup.events) == 1


def test_a_human_head_is_reported_not_acted_on(setup: Setup) -> None:
    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    human = setup.harness.human_commit(
        f"promote/{NAME}/{ENV}", f"manifests/{NAME}/overlays/{ENV}/replicas.yaml",
        trees.REPLICAS.format(name=NAME, replicas=7))
    setup.harness.approve(result.mr_iid, "alice")

    answer = setup.standin.deliveries[-1].response
    assert answer["status"] == "human_commit" and answer["head_sha"] == human
    assert answer["pushed_sha"] == result.head_sha and setup.events == []


def test_unconfigured_token_refuses_everything(tmp_path: Path) -> None:
    handler = GitLabHookHandler(None, DeliveryLog(tmp_path / "state"), lambda p, i: None,
                                lambda e: None)
    status, answer = handler.handle({"X-Gitlab-Token": "x"}, b"{}")
    assert status == 503 and "PROMOTER_GITLAB_WEBHOOK_TOKEN" in answer["detail"]


def test_malformed_body_is_400_and_other_events_are_ignored(tmp_path: Path) -> None:
    handler = GitLabHookHandler(Secret(TOKEN), DeliveryLog(tmp_path / "state"),
                                lambda p, i: None, lambda e: None)
    headers = {"X-Gitlab-Token": TOKEN, "X-Gitlab-Event": "Merge Request Hook"}
    assert handler.handle(headers, b"{not json")[0] == 400
    assert handler.handle(headers, b'{"object_kind": "merge_request"}')[0] == 400
    status, answer = handler.handle({**headers, "X-Gitlab-Event": "Push Hook"}, b"{}")
    assert (status, answer["status"]) == (200, "ignored")


def test_starlette_endpoint_mounts_the_handler(setup: Setup) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    setup.standin.hook_url = None                  # capture the payload, deliver it ourselves
    setup.harness.approve(result.mr_iid, "alice")
    delivery = setup.standin.deliveries[-1]

    app = Starlette(routes=[Route("/webhooks/gitlab", starlette_endpoint(setup.handler),
                                  methods=["POST"])])
    with TestClient(app) as client:
        answer = client.post("/webhooks/gitlab", content=json.dumps(delivery.payload),
                             headers=delivery.headers)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
        bad = client.post("/webhooks/gitlab", content=b"{}", headers={"X-Gitlab-Token": "no"})
        assert bad.status_code == 401 and set(bad.json()) == {"error", "detail"}


@pytest.mark.parametrize("failure", [
    AuthError("MLflow refused promoter's token"),        # was 401: GitLab's token was fine
    PermanentError("MLflow refused the tag write"),       # was 422
    UserError("the ledger row cannot be read")])          # was 400
def test_a_failure_while_acting_is_a_5xx_and_the_retry_is_acted_on(
        setup: Setup, failure: PromoterError) -> None:
    """The delivery itself was valid: a 4xx would blame GitLab, stop its retries and count
    towards GitLab disabling the hook. 503 with Retry-After; the delivery is released."""
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    setup.standin.hook_url = None                  # capture the payload, deliver it ourselves
    setup.harness.approve(result.mr_iid, "alice")
    delivery = setup.standin.deliveries[-1]
    setup.failures.append(failure)

    app = Starlette(routes=[Route("/webhooks/gitlab", starlette_endpoint(setup.handler),
                                  methods=["POST"])])
    with TestClient(app) as client:
        failed = client.post("/webhooks/gitlab", content=json.dumps(delivery.payload),
                             headers=delivery.headers)
        assert failed.status_code == 503 and failed.headers["Retry-After"] == "5"
        assert failed.json() == {"error": failure.kind, "detail": failure.message}
        retried = client.post("/webhooks/gitlab", content=json.dumps(delivery.payload),
                              headers=delivery.headers)
    assert retried.status_code == 200 and retried.json()["status"] == "accepted"
    assert len(setup.events) == 1


class FailingDeliveryLog(FailingWrites, DeliveryLog):
    """The GitLab hook's delivery log, its state database failing at one write."""


@pytest.mark.parametrize("failing", WRITES)
def test_a_state_database_failing_on_a_delivery_is_503_and_not_ready(
        setup: Setup, tmp_path: Path, failing: str) -> None:
    """Not a bug (500 "internal", logged as one) but an outage: answered as the MLflow intake
    answers a queue that cannot store, 503 "unavailable" with Retry-After, and /readyz not ready."""
    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    setup.standin.hook_url = None                  # capture the payload, deliver it ourselves
    setup.harness.approve(result.mr_iid, "alice")
    delivery = setup.standin.deliveries[-1]
    if failing == "release":                       # a release follows a failure to act
        setup.failures.append(TransientError("MLflow is down"))

    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path / "serve")})
    queue = JobQueue.open(settings.state_dir)
    hook = GitLabHookHandler(Secret(TOKEN), FailingDeliveryLog(tmp_path / "state", failing),
                             setup.harness.ledger.pushed, setup.on_event)
    app = create_app(settings, queue, gitlab_hook=hook)

    try:
        answer, ready = post_then_probe(app, "/webhooks/gitlab", json.dumps(delivery.payload),
                                        delivery.headers)
    finally:
        queue.close()
    assert_unavailable_and_not_ready(answer, ready)


def test_a_bug_while_acting_is_500_with_retry_after_and_the_retry_is_acted_on(
        setup: Setup, tmp_path: Path) -> None:
    """GitLab retries a 5xx: this one, answered by the app-wide handler, said not when."""
    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    setup.standin.hook_url = None                  # capture the payload, deliver it ourselves
    setup.harness.approve(result.mr_iid, "alice")
    delivery = setup.standin.deliveries[-1]
    setup.failures.append(RuntimeError("a bug while acting"))
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path / "serve")})
    queue = JobQueue.open(settings.state_dir)
    app = create_app(settings, queue, gitlab_hook=setup.handler)

    try:
        answer, _ = post_then_probe(app, "/webhooks/gitlab", json.dumps(delivery.payload),
                                    delivery.headers)
        retried, _ = post_then_probe(app, "/webhooks/gitlab", json.dumps(delivery.payload),
                                     delivery.headers)
    finally:
        queue.close()
    assert (answer.status_code, answer.headers.get("Retry-After")) == (500, "5"), answer.text
    assert answer.json() == {"error": "internal", "detail": "unexpected error; see the logs"}
    assert retried.status_code == 200 and retried.json()["status"] == "accepted"


def test_a_delivery_recorded_after_a_state_failure_makes_the_replica_ready_again(
        setup: Setup, tmp_path: Path) -> None:
    """A failed claim marks the replica not ready for a while; GitLab's retry recorded in the
    state database proves it stores again, as a delivery the queue stores does."""
    result = setup.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    setup.standin.hook_url = None                  # capture the payload, deliver it ourselves
    setup.harness.approve(result.mr_iid, "alice")
    delivery = setup.standin.deliveries[-1]
    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path / "serve")})
    queue = JobQueue.open(settings.state_dir)
    deliveries = FailingDeliveryLog(tmp_path / "state", "claim")
    hook = GitLabHookHandler(Secret(TOKEN), deliveries, setup.harness.ledger.pushed,
                             setup.on_event)
    app = create_app(settings, queue, gitlab_hook=hook)

    def failing(write: str) -> Callable[[], None]:
        return lambda: setattr(deliveries, "failing", write)

    try:
        failed, not_ready, recorded, ready = posts_then_probes(app, "/webhooks/gitlab", [
            (failing(write), json.dumps(delivery.payload), delivery.headers)
            for write in ("claim", "")])
    finally:
        queue.close()
    assert (failed.status_code, not_ready.status_code) == (503, 503), not_ready.text
    assert recorded.status_code == 200 and recorded.json()["status"] == "accepted"
    assert ready.status_code == 200, ready.text


def _own_closes(standin: StandIn, built: Setup) -> None:
    """Each close promoter made reached the hook titled as promoter's, and was ignored: no
    event for the outcomes (no mr.close audit, no "closed" tag, no settled ledger row)."""
    closes = [d for d in standin.deliveries
              if d.payload["object_attributes"].get("action") == "close"]
    assert closes
    for delivery in closes:
        assert delivery.payload["object_attributes"]["title"].endswith(
            (" - superseded", " - withdrawn"))
        assert delivery.response["status"] == "ignored", delivery.response
    assert built.events == []


def test_promoters_own_supersede_close_is_not_a_human_close(standin: StandIn,
                                                            tmp_path: Path) -> None:
    """GitLab fires the close hook before it applies a title sent in the same PUT (see the
    stand-in's update_mr): promoter retitles first, then closes."""
    built = Setup(standin, tmp_path)
    try:
        built.harness.provider = type(built.harness.provider)(
            built.harness.provider.forge, built.harness.ledger, supersede=True,
            backoff_seconds=0.01)
        built.harness.provider.propose(proposal("1"))
        built.harness.provider.propose(proposal("2"))
        _own_closes(standin, built)
    finally:
        built.receiver.stop()


def test_promoters_own_withdraw_close_is_not_a_human_close(setup: Setup) -> None:
    result = setup.harness.provider.propose(proposal("1"))
    assert result.merge_request is not None
    setup.harness.provider.withdraw(result.merge_request.source_branch, "no longer wanted")
    [mr] = setup.harness.mrs()
    assert mr.state == "closed" and mr.title.endswith(" - withdrawn")
    _own_closes(setup.standin, setup)


def test_a_supersede_cut_short_between_retitle_and_close_is_finished_as_promoters(
        standin: StandIn, tmp_path: Path) -> None:
    """The retitle went through, every close failed: the old MR is left open titled
    "… - superseded". The next run closes it (one suffix, not two) as promoter's close."""
    built = Setup(standin, tmp_path)
    try:
        provider = built.harness.provider = type(built.harness.provider)(
            built.harness.provider.forge, built.harness.ledger, supersede=True,
            backoff_seconds=0.01)
        first = provider.propose(proposal("1"))
        assert first.mr_iid is not None and first.merge_request is not None
        closing = standin.fault("PUT", rf"/merge_requests/{first.mr_iid}$", "503", after=1,
                                times=1000)
        with pytest.raises(PromoterError):
            provider.propose(proposal("2"))
        assert closing.hits >= 1
        old = standin.project.mrs[first.mr_iid]
        assert (old.state, old.title) == ("opened", first.merge_request.title + " - superseded")
        standin.faults.clear()

        again = provider.propose(proposal("2"))
        assert again.superseded_iid == first.mr_iid
        assert (old.state, old.title) == ("closed", first.merge_request.title + " - superseded")
        _own_closes(standin, built)
    finally:
        built.receiver.stop()


def test_a_reviewers_close_titled_as_promoters_is_a_reviewers_close(setup: Setup) -> None:
    """A reviewer retitles promoter's MR "… - superseded" and closes it. Before, the title
    alone made the close promoter's: ignored, so the version said mr_opened and its ledger row
    waited on the MR for good. Promoter's closes are its token user's (GitLab's hook names
    who closed)."""
    result = setup.harness.provider.propose(proposal("1"))
    assert result.merge_request is not None and result.mr_iid is not None
    # Two requests, as promoter does: sent together, GitLab's close hook has the old title.
    mrs = setup.harness.as_user("alice-token").mergerequests
    mrs.update(result.mr_iid, {"title": result.merge_request.title + " - superseded"})
    mrs.update(result.mr_iid, {"state_event": "close"})

    [close] = [d.response for d in setup.standin.deliveries
               if d.payload["object_attributes"].get("action") == "close"]
    assert close["status"] != "ignored"
    [event] = [e for e in setup.events if isinstance(e, MergeRequestEvent)]
    assert (event.action, event.iid, event.user) == ("close", result.mr_iid, "alice")
    # And the next proposal of that version respects the reviewer's close.
    again = setup.harness.provider.propose(proposal("1"))
    assert again.outcome is Outcome.CLOSED_BY_HUMAN and again.mr_iid == result.mr_iid


def test_an_event_naming_promoters_mr_with_another_branch_is_not_acted_on(
        tmp_path: Path) -> None:
    """Project, iid and sha of promoter's MR, but another deployment's branch: acting on it
    would update that other deployment's ledger row and audit (the hostile review's case)."""
    from promoter.state.pushed_heads import PushedHeads

    heads = PushedHeads(tmp_path / "state")
    heads.record(42, 7, f"promote/{NAME}/{ENV}", "a" * 40, "3")
    events: list[ForgeEvent] = []
    handler = GitLabHookHandler(Secret(TOKEN), DeliveryLog(tmp_path / "state"), heads.pushed,
                                events.append)

    def hook(branch: str) -> dict[str, Any]:
        body = {"object_kind": "merge_request", "user": {"username": "mallory"},
                "project": {"id": 42, "path_with_namespace": "platform/gitops"},
                "object_attributes": {"action": "merge", "iid": 7, "state": "merged",
                                      "source_branch": branch, "target_branch": "main",
                                      "last_commit": {"id": "a" * 40}, "url": "u", "title": "t"}}
        status, answer = handler.handle({"X-Gitlab-Token": TOKEN,
                                         "X-Gitlab-Event": "Merge Request Hook"},
                                        json.dumps(body).encode())
        assert status == 200
        return answer

    other = hook(f"promote/other-model/{ENV}")
    assert other["status"] == "ignored" and "not 'promote/other-model" in other["reason"]
    assert events == []
    assert hook(f"promote/{NAME}/{ENV}")["status"] == "accepted" and len(events) == 1


def test_the_served_hook_counts_ce_approvals(tmp_path: Path) -> None:
    """composition.gitlab_hook, as `serve` builds it from settings, wires the count."""
    from promoter.service import composition
    from promoter.settings import load_settings

    standin = make_standin(tmp_path, per_page=2, profile="ce-17")
    settings = load_settings(None, {
        "PROMOTER_GITLAB_URL": standin.base_url, "PROMOTER_GITLAB_PROJECT": "group/gitops",
        "PROMOTER_GITLAB_TOKEN": "bot-token", "PROMOTER_STATE_DIR": str(tmp_path / "state"),
        "PROMOTER_GITLAB_WEBHOOK_TOKEN": TOKEN})
    events: list[ForgeEvent] = []
    receiver = Receiver(composition.gitlab_hook(settings, events.append))
    standin.hook_url, standin.hook_token = receiver.url, TOKEN
    try:
        result = composition.provider(settings).propose(proposal("1", approvals_required=2))
        assert result.mr_iid is not None
        harness = GitLabHarness(standin, tmp_path / "reviewers")
        harness.approve(result.mr_iid, "alice")
        assert standin.deliveries[-1].response["status"] == "ignored"
        harness.approve(result.mr_iid, "bob")
        assert standin.deliveries[-1].response["status"] == "accepted"
        assert [(e.action, e.user) for e in events if isinstance(e, MergeRequestEvent)] == \
            [("approved", "bob")]
    finally:
        receiver.stop()
        standin.stop()
