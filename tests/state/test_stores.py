"""The stores on state.db keep their promises under concurrency: one transaction per
read-modify-write, one dedupe table with one retention."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from promoter.ports.pipeline import DeployedState
from promoter.service.gitlab_hook import DeliveryLog
from promoter.service.hook_deliveries import HookClaim, HookDeliveries
from promoter.service.ledger import CLAIM_IN_FLIGHT_SECONDS, StateLedger
from promoter.service.queue import JobKey
from promoter.state.deliveries import DELIVERY_RETENTION_SECONDS, PROCESSING_TAKEOVER_SECONDS
from tests.fixtures.concurrency import run_at_once
from tests.fixtures.state_backends import StateBackend
from tests.queue.conftest import ManualClock


def test_set_status_reads_and_writes_in_one_transaction(tmp_path: Path) -> None:
    ledger = StateLedger(tmp_path)
    ledger.put(DeployedState("fraud", "production", "fraud", "7", "mr_opened", 12))
    # Another process is mid-way through recording version 8 for the same deployment.
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE deployments SET version = '8', mr_iid = 13 WHERE model = 'fraud'")
    updated: list[DeployedState | None] = []
    thread = threading.Thread(target=lambda: updated.append(
        ledger.set_status("fraud", "production", "approved")))
    thread.start()
    time.sleep(0.3)  # set_status is now waiting for the write lock, not working on a stale read
    other.execute("COMMIT")
    thread.join(10)
    other.close()
    after = ledger.get("fraud", "production")
    assert after is not None and (after.version, after.mr_iid, after.status) == (
        "8", 13, "approved")
    assert updated == [after]


def test_many_threads_share_one_ledger_without_losing_writes(state_backend: StateBackend) -> None:
    ledger = StateLedger(state_backend.open())  # as `serve --workers 4`: one store, many threads

    def work(worker: int) -> None:
        for n in range(25):
            ledger.put(DeployedState(f"m{worker}", "staging", f"m{worker}", str(n), "mr_opened"))
            ledger.set_status(f"m{worker}", "staging", f"approved-{n}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for worker in range(4):
        state = ledger.get(f"m{worker}", "staging")
        assert state is not None and (state.version, state.status) == ("24", "approved-24")


def test_one_dedupe_table_and_one_retention_for_every_sender(state_backend: StateBackend) -> None:
    clock = ManualClock()
    queue = state_backend.queue(clock)
    hooks = DeliveryLog(queue.db)
    queue.enqueue(JobKey("fraud", "7", "production", "promote"), source="mlflow",
                  delivery_id="same-id")
    assert queue.record_delivery("databricks", "same-id")  # other sender, other id space
    assert hooks.claim("same-id").outcome is HookClaim.ACT
    assert hooks.claim("same-id").outcome is HookClaim.IN_PROGRESS  # not answered yet
    rows = queue.db.read(lambda c: c.execute(
        "SELECT source, status FROM deliveries ORDER BY source").fetchall())
    assert [tuple(r) for r in rows] == [("databricks", None), ("gitlab", "processing"),
                                        ("mlflow", None)]
    # One retention for all: just past it is forgotten whoever sent it, just inside is kept.
    expired, kept = clock.now() - DELIVERY_RETENTION_SECONDS - 1, clock.now() - 60
    queue.db.write(lambda c: c.execute(
        "UPDATE deliveries SET received_at = CASE source WHEN 'databricks' THEN ? ELSE ? END",
        (kept, expired)))
    assert queue.prune_deliveries() == 2
    # The GitLab key was forgotten like MLflow's.
    assert hooks.claim("same-id").outcome is HookClaim.ACT
    assert not queue.record_delivery("databricks", "same-id")
    queue.close()


def test_a_handler_that_outlived_its_claim_touches_nothing_of_its_successors(
        state_backend: StateBackend) -> None:
    """A first handler, stuck past the takeover age, fails or answers late while a
    re-delivery holds the claim: its release must not free the claim for a third handler to
    act at the same time, and its answer must not stand in for the successor's."""
    clock = ManualClock()
    queue = state_backend.queue(clock)
    hooks = HookDeliveries(queue.db, "gitlab", clock=clock.now)
    stuck = hooks.claim("d-1")
    assert stuck.outcome is HookClaim.ACT
    clock.advance(PROCESSING_TAKEOVER_SECONDS + 1)
    successor = hooks.claim("d-1")
    assert successor.outcome is HookClaim.ACT
    hooks.release(stuck)
    assert hooks.claim("d-1").outcome is HookClaim.IN_PROGRESS  # a third delivery waits
    hooks.finish(stuck, "accepted")

    def status(conn: Any) -> str:
        return str(conn.execute("SELECT status FROM deliveries WHERE delivery_id = 'd-1'"
                                ).fetchone()["status"])

    assert queue.db.read(status) == "processing"
    hooks.finish(successor, "recorded")
    assert queue.db.read(status) == "recorded"
    assert hooks.claim("d-1").outcome is HookClaim.DONE
    queue.close()


def test_a_delivery_answered_before_is_claimed_again_by_one_handler(
        state_backend: StateBackend) -> None:
    """The Argo CD hook handles a report again when it means something new (Healthy again
    after Degraded): one handler gets the claim, a release lets the retry claim it afresh."""
    clock = ManualClock()
    queue = state_backend.queue(clock)
    hooks = HookDeliveries(queue.db, "argocd", clock=clock.now)
    hooks.finish(hooks.claim("n-1"), "recorded")
    again = hooks.claim_again("n-1")
    assert again.outcome is HookClaim.ACT
    assert hooks.claim("n-1").outcome is HookClaim.IN_PROGRESS
    assert hooks.claim_again("n-1").outcome is HookClaim.IN_PROGRESS
    hooks.release(again)
    assert hooks.claim_again("n-1").outcome is HookClaim.ACT   # nothing answered: afresh
    queue.close()


def test_reviewers_approving_a_local_mr_at_once_are_all_counted(
        state_backend: StateBackend) -> None:
    from promoter.adapters.local_mrs import LocalMrStore

    store = LocalMrStore(state_backend.open())
    iid = store.create("promote/fraud/production", "main", "t", "d", [])
    users = [f"reviewer-{n}" for n in range(8)]
    head = "a" * 40
    threads = [threading.Thread(target=store.add_approval, args=(iid, user, head))
               for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    record = store.get(iid)
    assert record is not None and sorted(record["approved_by"]) == users
    assert store.add_approval(iid, "reviewer-0", head) is False  # once per person
    # An approval of another head (the branch moved) starts that head's approvals afresh.
    assert store.add_approval(iid, "reviewer-0", "b" * 40) is True
    record = store.get(iid)
    assert record is not None and record["approved_by"] == ["reviewer-0"]
    assert record["sha"] == "b" * 40


def test_a_second_open_local_mr_for_one_branch_is_refused(state_backend: StateBackend) -> None:
    from promoter.adapters.local_mrs import LocalMrStore, OpenMergeRequestExists

    store = LocalMrStore(state_backend.open())
    first = store.create("promote/fraud/production", "main", "t", "d", ["promoter"])
    with pytest.raises(OpenMergeRequestExists):
        store.create("promote/fraud/production", "main", "t2", "d2", [])
    store.update(first, state="merged")
    second = store.create("promote/fraud/production", "main", "t3", "d3", [])
    assert second > first  # (PostgreSQL may skip the number the refused one drew)
    assert [mr["iid"] for mr in store.find(state="opened")] == [second]


def test_a_deployment_name_is_claimed_by_one_model(state_backend: StateBackend) -> None:
    ledger = StateLedger(state_backend.open())
    assert ledger.claim_name("fraud-detector", "Fraud Detector", "staging") == frozenset()
    assert ledger.claim_name("fraud-detector", "Fraud Detector", "staging") == frozenset()  # again
    assert ledger.claim_name("fraud-detector", "fraud_detector", "staging") == {
        "Fraud Detector"}
    # A row promoter wrote before names were claimed owns its name just the same.
    ledger.put(DeployedState("churn", "staging", "churn", "3", "merged"))
    assert ledger.claim_name("churn", "Churn", "staging") == {"churn"}
    assert ledger.claim_name("churn", "churn", "staging") == frozenset()
    # What the pipeline's early check reads: rows and claims alike (a claimant whose first
    # proposal failed has no row, and still owns the name).
    assert ledger.owners("fraud-detector") == {"Fraud Detector"}
    assert ledger.owners("churn") == {"churn"} and ledger.owners("nobody") == frozenset()


def test_a_name_decommissioned_everywhere_is_given_up_and_taken_over(
        state_backend: StateBackend) -> None:
    ledger = StateLedger(state_backend.open())
    assert ledger.claim_name("fraud-detector", "Fraud Detector", "staging") == frozenset()
    for env in ("staging", "production"):
        ledger.put(DeployedState("Fraud Detector", env, "fraud-detector", "3", "merged"))
    ledger.set_status("fraud-detector", "production", "decommissioned")
    assert ledger.claim_name("fraud-detector", "fraud_detector", "staging") == {
        "Fraud Detector"}
    ledger.set_status("fraud-detector", "staging", "decommissioning")   # removal MR open
    assert ledger.owners("fraud-detector") == {"Fraud Detector"}
    ledger.set_status("fraud-detector", "staging", "decommissioned")    # ... and merged
    assert ledger.owners("fraud-detector") == frozenset()

    assert ledger.claim_name("fraud-detector", "fraud_detector", "staging") == frozenset()
    # The claim moved before the new owner has a row, and the old owner's rows are gone, so
    # an MR of branch promote/fraud-detector/<env> can only be the new owner's.
    assert ledger.owners("fraud-detector") == {"fraud_detector"}
    assert ledger.by_deployment("fraud-detector", "staging") is None
    assert ledger.get("Fraud Detector", "staging") is None
    assert ledger.claim_name("fraud-detector", "Fraud Detector", "staging") == {"fraud_detector"}


def test_a_model_claiming_its_name_again_after_giving_it_up_owns_it_again(
        state_backend: StateBackend) -> None:
    """Its decommissioned rows are still there when it claims again: the claim alone must keep
    another model, claiming while the first proposal is under way, out."""
    ledger = StateLedger(state_backend.open())
    ledger.claim_name("churn", "churn", "staging")
    ledger.put(DeployedState("churn", "staging", "churn", "1", "merged"))
    ledger.set_status("churn", "staging", "decommissioned")
    assert ledger.owners("churn") == frozenset()
    assert ledger.claim_name("churn", "churn", "staging") == frozenset()  # promoted again
    assert ledger.claim_name("churn", "Churn", "staging") == {"churn"}  # meanwhile: refused
    assert ledger.owners("churn") == {"churn"}


def test_a_claim_made_while_a_removal_mr_is_open_survives_its_merge(
        state_backend: StateBackend) -> None:
    """Model m is being removed from staging (its removal MR open) and promoted into
    production (claimed, no row there yet: the push is under way). The removal's merge must
    not give the name up under the production proposal, or another model takes the name and
    proposes too: two models on one name."""
    ledger = StateLedger(state_backend.open())
    assert ledger.claim_name("churn", "m", "staging") == frozenset()
    ledger.put(DeployedState("m", "staging", "churn", "1", "merged"))
    ledger.set_status("churn", "staging", "decommissioning")           # removal MR open
    assert ledger.claim_name("churn", "m", "production") == frozenset()
    ledger.set_status("churn", "staging", "decommissioned")            # removal MR merged
    assert ledger.owners("churn") == {"m"}
    assert ledger.claim_name("churn", "other", "staging") == {"m"}     # refused
    assert ledger.get("m", "staging") is not None                      # m's rows stay
    ledger.put(DeployedState("m", "production", "churn", "2", "mr_opened", 7))
    assert ledger.owners("churn") == {"m"}
    # Its proposal landed: once that deployment is decommissioned too, the name is given up.
    ledger.set_status("churn", "production", "decommissioned")
    assert ledger.owners("churn") == frozenset()
    assert ledger.claim_name("churn", "other", "staging") == frozenset()


def test_a_claim_whose_proposal_never_wrote_its_row_stops_counting_when_old(
        state_backend: StateBackend) -> None:
    """The production proposal's job died (or failed for good) after claiming: a retry would
    claim again, so past CLAIM_IN_FLIGHT_SECONDS nothing of it is under way any more."""
    clock = ManualClock()
    ledger = StateLedger(state_backend.open(), clock=clock.now)
    ledger.claim_name("churn", "m", "staging")
    ledger.put(DeployedState("m", "staging", "churn", "1", "decommissioning"))
    ledger.claim_name("churn", "m", "production")
    ledger.set_status("churn", "staging", "decommissioned")
    clock.advance(CLAIM_IN_FLIGHT_SECONDS - 1)
    assert ledger.owners("churn") == {"m"}
    clock.advance(2)
    assert ledger.owners("churn") == frozenset()
    assert ledger.claim_name("churn", "other", "staging") == frozenset()
    assert ledger.owners("churn") == {"other"} and ledger.get("m", "staging") is None


def test_the_environments_a_name_is_in_use_in_are_its_live_rows_and_its_claim_in_flight(
        state_backend: StateBackend) -> None:
    """What garbage collection asks before removing a base: staging runs it, production's
    first proposal is under way (claimed, no row yet), dev was decommissioned."""
    clock = ManualClock()
    ledger = StateLedger(state_backend.open(), clock=clock.now)
    assert ledger.environments_in_use("churn") == frozenset()
    ledger.claim_name("churn", "m", "dev")
    ledger.put(DeployedState("m", "dev", "churn", "1", "decommissioned"))
    ledger.claim_name("churn", "m", "staging")
    ledger.put(DeployedState("m", "staging", "churn", "1", "merged"))
    # Rows of proposals that ended without a deployment are not in use: such an environment
    # has no overlay GC could remove, so counting it would keep the base for good.
    for env, status in (("qa", "denied"), ("perf", "closed"), ("eu", "invalid"),
                        ("us", "failed")):
        ledger.claim_name("churn", "m", env)
        ledger.put(DeployedState("m", env, "churn", "1", status))
    assert ledger.environments_in_use("churn") == {"staging"}
    ledger.claim_name("churn", "m", "production")
    assert ledger.environments_in_use("churn") == {"staging", "production"}
    clock.advance(CLAIM_IN_FLIGHT_SECONDS + 1)        # that proposal's job died long ago
    assert ledger.environments_in_use("churn") == {"staging"}
    assert ledger.environments_in_use("other") == frozenset()


def test_the_proposals_of_a_name_under_way_are_its_open_rows_and_its_claim_in_flight(
        state_backend: StateBackend) -> None:
    """What garbage collection asks before removing an overlay it finds idle: a row merely
    merged is no proposal; staging's next version claimed, then its MR open, is one; a row
    closed is none; a claim too old no longer counts."""
    clock = ManualClock()
    ledger = StateLedger(state_backend.open(), clock=clock.now)
    ledger.claim_name("churn", "m", "staging")
    ledger.put(DeployedState("m", "staging", "churn", "1", "merged"))
    ledger.claim_name("churn", "m", "production")
    ledger.put(DeployedState("m", "production", "churn", "1", "merged"))
    assert ledger.proposals_under_way("churn") == frozenset()
    ledger.claim_name("churn", "m", "staging")          # version 2, about to push
    assert ledger.proposals_under_way("churn") == {"staging"}
    ledger.put(DeployedState("m", "staging", "churn", "2", "mr_opened", 7))
    assert ledger.proposals_under_way("churn") == {"staging"}
    ledger.put(DeployedState("m", "staging", "churn", "2", "closed", 7))
    assert ledger.proposals_under_way("churn") == frozenset()
    for status in ("approved", "needs_attention"):
        ledger.put(DeployedState("m", "production", "churn", "2", status, 8))
        assert ledger.proposals_under_way("churn") == {"production"}
    ledger.put(DeployedState("m", "production", "churn", "2", "merged", 8))
    ledger.claim_name("churn", "m", "dev")
    assert ledger.proposals_under_way("churn") == {"dev"}
    clock.advance(CLAIM_IN_FLIGHT_SECONDS + 1)        # that proposal's job died long ago
    assert ledger.proposals_under_way("churn") == frozenset()
    assert ledger.environments_in_use("churn") == {"production"}   # staging: closed


def test_a_first_proposal_that_never_wrote_its_row_gives_the_name_up_when_old(
        state_backend: StateBackend) -> None:
    """A model's very first proposal failed for good after claiming (its job parked): past
    CLAIM_IN_FLIGHT_SECONDS the claim keeps nobody out; a retry of that job claims again."""
    clock = ManualClock()
    ledger = StateLedger(state_backend.open(), clock=clock.now)
    assert ledger.claim_name("churn", "m", "staging") == frozenset()
    clock.advance(CLAIM_IN_FLIGHT_SECONDS - 1)
    assert ledger.claim_name("churn", "other", "staging") == {"m"}
    clock.advance(2)
    assert ledger.owners("churn") == frozenset()
    assert ledger.claim_name("churn", "other", "staging") == frozenset()
    assert ledger.claim_name("churn", "m", "staging") == {"other"}   # the retry, too late


def test_a_model_promoted_again_after_its_decommission_keeps_its_name(
        state_backend: StateBackend) -> None:
    ledger = StateLedger(state_backend.open())
    ledger.claim_name("churn", "churn", "staging")
    ledger.put(DeployedState("churn", "staging", "churn", "1", "decommissioned"))
    ledger.put(DeployedState("other", "staging", "churn-old", "1", "merged"))
    assert ledger.claim_name("churn", "churn", "staging") == frozenset()
    assert ledger.get("churn", "staging") is not None     # its own history is not dropped
    assert ledger.get("other", "staging") is not None     # nor another name's rows


def test_models_claiming_one_name_at_once_leave_one_owner(state_backend: StateBackend) -> None:
    ledger = StateLedger(state_backend.open())
    results, errors = run_at_once(6, lambda n: (f"model-{n}",
                                                ledger.claim_name("shared", f"model-{n}",
                                                                  "staging")))
    assert errors == []
    winners = [model for model, others in results if not others]
    assert len(winners) == 1
    assert all(others == {winners[0]} for model, others in results if model not in winners)


def test_gc_mrs_noted_unrecorded_are_listed_oldest_first_until_recorded(
        state_backend: StateBackend) -> None:
    """`promoter gc` notes each MR it proposes; a replica's sweep lists them, the recording
    removes them (state_meta holds other keys too: only GC's notes are listed)."""
    from promoter.state.gc_pending import GcPending

    gc, replica = GcPending(state_backend.open()), GcPending(state_backend.open())
    assert replica.unrecorded() == []
    gc.proposed(12)
    gc.proposed(7)
    gc.proposed(12)                                     # re-proposed on its branch: one note
    replica.db.write(lambda conn: conn.execute(
        "INSERT INTO state_meta (key, value) VALUES ('legacy_import', 'x')"))
    assert replica.unrecorded() == [7, 12]
    replica.recorded(7)
    replica.recorded(7)                                 # recorded twice: nothing to remove
    assert gc.unrecorded() == [12]


def test_a_percent_sign_reads_the_same_on_both_backends_with_or_without_parameters(
        state_backend: StateBackend) -> None:
    """PostgreSQL got ``%%`` (doubled for psycopg's formatting) in a statement without
    parameters, which psycopg does not format: the modulo failed, a literal read doubled."""
    db = state_backend.open()
    assert db.read(lambda c: tuple(c.execute("SELECT 7 % 4, '100%'").fetchone())) == (3, "100%")
    assert db.read(lambda c: tuple(c.execute("SELECT 7 % ?, '100%' || ?", (4, "!")
                                             ).fetchone())) == (3, "100%!")
