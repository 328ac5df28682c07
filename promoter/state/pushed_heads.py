"""The one record of the MR heads promoter pushed, written by both git providers.

A webhook (GitLab) or a reviewer's command (local provider) may act on an MR only while its
head is the commit promoter pushed; anything else is a human's commit. ``(project, iid)`` is
the key: ``project`` is GitLab's numeric project id, which webhooks carry and renames do not
change (the local provider uses 0). The ledger reads the head of a deployment from here too,
by its branch, so there is no second copy to drift.
"""

from __future__ import annotations

import time
from pathlib import Path

from promoter.ports.git import Outcome, Proposal, ProposalResult
from promoter.state.db import StateDB, state_db

# Outcomes whose head is a person's commit, not promoter's: never recorded as promoter's push.
_NOT_OURS = (Outcome.HUMAN_COMMITS, Outcome.CLOSED_BY_HUMAN)


class PushedHeads:
    def __init__(self, state: Path | StateDB) -> None:
        self.db = state_db(state)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> PushedHeads:
        return cls(Path(state_dir))

    def record(self, project: int, iid: int, branch: str, sha: str, version: str,
               model: str | None = None) -> None:
        """``model``: the registered model the head proposes (Proposal.model)."""
        now = time.time()
        self.db.write(lambda conn: conn.execute(
            "INSERT INTO pushed_heads (project, iid, branch, sha, version, model, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, iid) DO UPDATE SET "
            "branch = excluded.branch, sha = excluded.sha, version = excluded.version, "
            "model = excluded.model, recorded_at = excluded.recorded_at",
            (project, iid, branch, sha, version, model, now)))

    def record_proposal(self, project: int, proposal: Proposal, result: ProposalResult) -> None:
        """Record the head a provider's propose() left on the MR, if promoter pushed it."""
        mr = result.merge_request
        if (mr and result.head_sha and mr.source_branch == proposal.branch
                and result.outcome not in _NOT_OURS):
            self.record(project, mr.iid, mr.source_branch, result.head_sha, proposal.version,
                        proposal.model)

    def pushed(self, project: int, iid: int) -> tuple[str, str] | None:
        """(branch, sha) promoter pushed for the MR, or None."""
        row = self.db.read(lambda conn: conn.execute(
            "SELECT branch, sha FROM pushed_heads WHERE project = ? AND iid = ?",
            (project, iid)).fetchone())
        return (str(row[0]), str(row[1])) if row else None

    def pushed_proposal(self, project: int, iid: int) -> tuple[str | None, str | None]:
        """(version, registered model) promoter's head of the MR proposes; None for what is
        not known (no head, or one recorded before the model was). The deployment name's
        current ledger row need not be that model's: a name given up is taken over by the next
        model claiming it."""
        row = self.db.read(lambda conn: conn.execute(
            "SELECT version, model FROM pushed_heads WHERE project = ? AND iid = ?",
            (project, iid)).fetchone())
        if row is None:
            return None, None
        return (None if row[0] is None else str(row[0]), None if row[1] is None else str(row[1]))

    def pushed_sha(self, project: int, iid: int) -> str | None:
        row = self.db.read(lambda conn: conn.execute(
            "SELECT sha FROM pushed_heads WHERE project = ? AND iid = ?",
            (project, iid)).fetchone())
        return str(row[0]) if row else None
