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
