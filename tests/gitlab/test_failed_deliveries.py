"""GitLab does not retry a delivery promoter answered 5xx: it logs it under the hook's *Recent
events*, for a resend by hand. An approval whose delivery failed (MLflow down) was therefore
never recorded unless someone resent it; a merge or close at least had the MR sweep. promoter
now keeps such a delivery (state.failed_deliveries) and the reconcile loop's leader handles it
again when due (GitLabHookHandler.retry_failed): GitLab's stand-in sends its real hooks (with
``Idempotency-Key``) over HTTP to promoter's handler; nothing resends them here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.core.mr_events import MergeRequestEvent
from promoter.errors import TransientError
from promoter.secret_settings import Secret
from promoter.service.gitlab_hook import DeliveryLog, GitLabHookHandler
from promoter.service.queue import JobQueue
from promoter.service.reconcile import run_periodically
from promoter.settings import load_settings
from promoter.state import failed_deliveries
from promoter.state.failed_deliveries import MAX_ATTEMPTS, FailedDeliveries, delay
from tests.core.test_pipeline import MemoryRegistry
from tests.gitlab.conftest import proposal
from tests.gitlab.standin.server import StandIn
from tests.gitlab.test_hooks import TOKEN, Setup


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Keeping(Setup):
    """The hook handler as `promoter serve` builds it: failed deliveries kept."""

    def __init__(self, standin: StandIn, tmp: Path) -> None:
        super().__init__(standin, tmp)
        self.clock = Clock()
        self.kept = FailedDeliveries(self.deliveries.db, self.clock)
        self.handler = GitLabHookHandler(
            Secret(TOKEN), self.deliveries, self.harness.ledger.pushed, self.on_event,
            own_username=self.harness.provider.own_username,
            counted_approvals=self.harness.provider.forge.counted_approvals, failed=self.kept)
        self.receiver.handler = self.handler

    def approvals(self) -> list[str | None]:
        return [e.user for e in self.events
                if isinstance(e, MergeRequestEvent) and e.action == "approved"]


def approved_while_mlflow_is_down(keeping: Keeping, failures: int = 1) -> None:
    """alice approves promoter's MR; acting on it fails the next ``failures`` times."""
    result = keeping.harness.provider.propose(proposal("1", approvals_required=1))
    assert result.mr_iid is not None
    keeping.failures.extend([TransientError("MLflow is down")] * failures)
    keeping.harness.approve(result.mr_iid, "alice")


@pytest.fixture
def keeping(standin: StandIn, tmp_path: Path) -> Iterator[Keeping]:
    built = Keeping(standin, tmp_path)
    yield built
    built.receiver.stop()


def test_an_approval_whose_delivery_failed_is_recorded_without_a_resend(
        keeping: Keeping) -> None:
    approved_while_mlflow_is_down(keeping)
    failed = keeping.standin.deliveries[-1]
    assert failed.status == 503 and keeping.approvals() == []
    [kept] = keeping.kept.all()
    assert (kept.event, kept.attempts, kept.error) == ("Merge Request Hook", 1, "MLflow is down")

    assert keeping.handler.retry_failed() == 0          # not due yet: backing off
    keeping.clock.now += delay(1)
    assert keeping.handler.retry_failed() == 1
    assert keeping.approvals() == ["alice"] and keeping.kept.all() == []
    # A resend from GitLab's Recent events afterwards is the same delivery: not acted on twice.
    again = keeping.standin.redeliver(failed)
    assert (again.status, again.response["status"]) == (200, "duplicate")
    assert keeping.approvals() == ["alice"]


def test_a_kept_delivery_resent_from_gitlab_first_is_forgotten_unacted(
        keeping: Keeping) -> None:
    approved_while_mlflow_is_down(keeping)
    assert keeping.standin.redeliver(keeping.standin.deliveries[-1]).status == 200
    keeping.clock.now += delay(1)
    assert keeping.handler.retry_failed() == 1          # answered: a duplicate
    assert keeping.approvals() == ["alice"] and keeping.kept.all() == []


def test_a_delivery_failing_every_time_is_parked_with_its_reason(
        keeping: Keeping, caplog: pytest.LogCaptureFixture) -> None:
    approved_while_mlflow_is_down(keeping, MAX_ATTEMPTS)
    for attempt in range(1, MAX_ATTEMPTS):
        [kept] = keeping.kept.all()
        assert kept.attempts == attempt and not kept.parked
        keeping.clock.now = kept.due
        with caplog.at_level(logging.ERROR, logger="promoter.gitlab_hook"):
            assert keeping.handler.retry_failed() == 0
    [parked] = keeping.kept.all()
    assert parked.parked and parked.attempts == MAX_ATTEMPTS and parked.error == "MLflow is down"
    [logged] = [r for r in caplog.records if "parked" in r.getMessage()]
    assert logged.fields == {"idempotency_key": parked.key,  # type: ignore[attr-defined]
                             "attempts": MAX_ATTEMPTS, "error": "MLflow is down"}
    keeping.clock.now += 10 * delay(MAX_ATTEMPTS)
    assert keeping.kept.due() == []                      # parked: handled only if resent
    assert keeping.approvals() == []
    # The cause fixed, a resend from GitLab acts, under the same key.
    assert keeping.standin.redeliver(keeping.standin.deliveries[-1]).status == 200
    assert keeping.approvals() == ["alice"]


def test_the_kept_delivery_holds_no_token(keeping: Keeping) -> None:
    approved_while_mlflow_is_down(keeping)
    values = keeping.deliveries.db.read(lambda conn: conn.execute(
        "SELECT value FROM state_meta").fetchall())
    assert values and not any(TOKEN in str(value) for (value,) in values)


def test_at_most_max_kept_deliveries_are_kept(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failed_deliveries, "MAX_KEPT", 3)
    kept = FailedDeliveries(DeliveryLog(tmp_path / "state").db, Clock())
    assert all(kept.keep(f"key-{n}", "Merge Request Hook", b"{}", "down") for n in range(3))
    assert kept.keep("key-0", "Merge Request Hook", b"{}", "down")   # kept already
    assert not kept.keep("key-3", "Merge Request Hook", b"{}", "down")
    assert sorted(d.key for d in kept.all()) == ["key-0", "key-1", "key-2"]


def test_backoff_doubles_from_thirty_seconds_to_four_hours() -> None:
    assert [delay(n) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert delay(MAX_ATTEMPTS) == 4 * 3600.0


def test_the_reconcile_leader_handles_failed_deliveries_then_sweeps(tmp_path: Path) -> None:
    """`promoter serve` wires GitLabHookHandler.retry_failed into the reconcile loop: its
    leader runs it each pass before the MR sweep, and a failure of one stops not the other."""
    config = tmp_path / "promoter.yaml"
    config.write_text("server:\n  reconcile_interval_seconds: 60\n")
    settings = load_settings(config, {"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    ran: list[str] = []

    def retry_failed() -> None:
        ran.append("failed deliveries")
        raise TransientError("the state database is failing over")

    queue = JobQueue.open(tmp_path / "state")
    try:
        run_periodically(settings, MemoryRegistry(), queue, lambda _seconds: True, None,
                         lambda: ran.append("mr sweep"), retry_failed)
    finally:
        queue.close()
    assert ran == ["failed deliveries", "mr sweep"]


def test_a_delivery_whose_handling_crashes_is_counted_towards_parking(
        keeping: Keeping, caplog: pytest.LogCaptureFixture) -> None:
    """A bug while handling it again is an attempt like any failure: it is parked in time,
    not tried every pass for good."""
    approved_while_mlflow_is_down(keeping)
    keeping.failures.append(RuntimeError("a bug"))
    keeping.clock.now += delay(1)
    with caplog.at_level(logging.ERROR, logger="promoter.gitlab_hook"):
        assert keeping.handler.retry_failed() == 0
    [kept] = keeping.kept.all()
    assert kept.attempts == 2 and kept.error == "internal error (RuntimeError)"
    assert "crashed: RuntimeError" in caplog.text


def test_metrics_count_the_kept_deliveries(keeping: Keeping, tmp_path: Path) -> None:
    """`promoter serve`'s /metrics says how many failed deliveries wait and how many are
    parked: the one signal an operator can alert on."""
    from starlette.testclient import TestClient

    from promoter.service.app import create_app

    settings = load_settings(None, {"PROMOTER_STATE_DIR": str(tmp_path / "state")})
    queue = JobQueue.open(tmp_path / "state")
    approved_while_mlflow_is_down(keeping, MAX_ATTEMPTS)
    try:
        with TestClient(create_app(settings, queue, gitlab_hook=keeping.handler)) as client:
            text = client.get("/metrics").text
            assert 'promoter_gitlab_deliveries_kept{state="waiting"} 1.0' in text
            assert 'promoter_gitlab_deliveries_kept{state="parked"} 0.0' in text
            for _ in range(MAX_ATTEMPTS - 1):   # bounded: parked on the last
                keeping.clock.now = keeping.kept.all()[0].due
                keeping.handler.retry_failed()
            text = client.get("/metrics").text
            assert 'promoter_gitlab_deliveries_kept{state="waiting"} 0.0' in text
            assert 'promoter_gitlab_deliveries_kept{state="parked"} 1.0' in text
    finally:
        queue.close()
