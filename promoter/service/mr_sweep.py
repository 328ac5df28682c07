"""The MR sweep: a reconcile step that repairs merge/close outcomes whose hook was lost.

Each pass of the reconcile leader reads the ledger rows still waiting on their MR (at most
``limit``, oldest MR first), asks the git provider for each MR, and feeds the outcomes handler
(the one the webhook calls) the event promoter.core.mr_sweep synthesizes for a merged or closed
one. The handler ignores an outcome already recorded, so the sweep and a late hook record it
once. An MR settled with someone else's head is fed to it too, as a foreign outcome
(recorded, not acted on as promoter's). A forge or MLflow failure on one MR is logged, kept in
the report (`promoter reconcile --once` prints it and exits non-zero) and the pass goes on with
the next: the row still waits, so the next pass tries it again.

A row that moved on to a newer MR before its MR's outcome was recorded noted that MR
(state.left_mrs): each pass also reads those, a few a pass, and feeds their outcomes to the
same handler, which records them for the MR's own version (never settling the newer row).

MRs are read by iid from the configured project (``git.project``), and iids restart per
project: a row or note whose MR is in another project (``git.project`` changed: the GitOps
repository moved, or a fork was adopted) is not read, for its iid names another MR here. It is
left alone, not dropped: listed in each pass's report (``other_project``) and logged once per
process with the reason, so an operator sees what still waits there; the row waits until its
deployment's next proposal moves it to an MR of this project, and a note until its outcome is
recorded (a hook of that project, or the sweep once ``git.project`` names it again). Reading
the other project instead would record what happened there as this deployment's outcome:
a merge into a repository Argo CD no longer syncs would make its version live. Rows and
notes written before projects were recorded are read as the configured project's, as before.

Garbage collection's MRs have no ledger row: each pass also reads the GC MRs noted as not
recorded yet (state.gc_pending: one small query, no audit read) and reads those MRs, oldest
first, a few a pass (GitLab does not re-send a GC merge hook answered 503, nor one sent while
promoter was down). Their outcomes are fed to the same handler and reported like the others,
under name/env ``gc``/``collect``; the handler removes the note once it recorded one. A noted
GC MR the forge no longer has (deleted) is audited and no longer followed: nothing can merge it
now, and reading it again would fail every pass. A deployment's MR that is gone stays a
failure of the pass: its row waits on an outcome only an operator can tell.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promoter.core import mr_sweep as core
from promoter.core.mr_events import ForgeEvent
from promoter.errors import NotFoundError, PromoterError
from promoter.ports.git import GC_KEY, MergeRequest
from promoter.service.logs import log
from promoter.service.outcome_claims import RecordingElsewhere

if TYPE_CHECKING:
    from promoter.ports.git import GitProvider
    from promoter.ports.pipeline import DeployedState
    from promoter.service.ledger import StateLedger
    from promoter.service.metrics import Metrics
    from promoter.state.gc_pending import GcPending
    from promoter.state.left_mrs import LeftMr, LeftMrs
    from promoter.state.pushed_heads import PushedHeads

_log = logging.getLogger("promoter.mr_sweep")
# Forge reads per pass: enough to catch up after an outage within a few passes, few enough
# that a pass stays short and well under GitLab's API rate limits.
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class SweepFailure:
    """An MR the sweep could not settle this pass (its row still waits: the next pass retries).
    The error is kept whole so a caller can tell a fault to fix from an outage to wait out."""

    iid: int
    name: str
    env: str
    error: PromoterError

    def describe(self) -> dict[str, object]:
        return {"iid": self.iid, "name": self.name, "env": self.env, "error": self.error.message}


@dataclass
class SweepReport:
    looked_at: int = 0
    recorded: list[dict[str, object]] = field(default_factory=list)
    failures: list[SweepFailure] = field(default_factory=list)
    # Outcomes another handler (the webhook, another replica) was recording meanwhile: not a
    # failure to check them; the next pass finds them recorded, or records them itself.
    elsewhere: list[dict[str, object]] = field(default_factory=list)
    # GC MRs the forge no longer has (deleted): nothing can merge them any more, so they are
    # no longer followed (audited), where reading them again would fail every pass for good.
    gone: list[int] = field(default_factory=list)
    # MRs of another project than the configured one (rows' and notes'): not read, left alone.
    other_project: list[dict[str, object]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def describe(self) -> dict[str, object]:
        return {"looked_at": self.looked_at, "recorded": self.recorded, "failed": self.failed,
                "failures": [failure.describe() for failure in self.failures],
                "recording_elsewhere": self.elsewhere, "gc_mrs_gone": self.gone,
                "other_project": self.other_project}


@dataclass
class MergeRequestSweep:
    ledger: StateLedger
    provider: GitProvider
    heads: PushedHeads
    on_event: Callable[[ForgeEvent], None]   # MergeRequestOutcomes, as the webhook's
    project: Callable[[], tuple[int, str]]   # (id, path) promoter records pushes under
    target_branch: str
    limit: int = DEFAULT_LIMIT
    metrics: Metrics | None = None
    # MRs (of the configured project) found settled by someone else's head or elsewhere: not
    # looked at again this process.
    left_alone: set[int] = field(default_factory=set)
    # (project, iid) of MRs of another project already logged as left alone this process.
    told_other_project: set[tuple[int, int]] = field(default_factory=set)
    # GC MRs whose outcome is not recorded yet; None: GC's MRs are not followed.
    gc_pending: GcPending | None = None
    # MRs deployment rows moved on from before their outcome was recorded; None: not followed.
    left_mrs: LeftMrs | None = None
    # Told (project id, iid) of a noted GC MR the forge says does not exist
    # (GcOutcomes.gone: records what the target branch shows it removed,
    # audits it, stops following it); None: such an MR is a failure of every pass.
    on_gc_mr_gone: Callable[[int, int], None] | None = None

    def __call__(self) -> SweepReport:
        report = SweepReport()
        waiting = self.ledger.with_statuses(core.WAITING)
        noted = self.left_mrs.unrecorded() if self.left_mrs is not None else []
        gc_iids = self._unrecorded_gc_mrs()
        if not waiting and not gc_iids and not noted:
            return report
        project_id, project_path = self.project()
        for row in waiting:
            if not core.of_project(row.mr_project, project_id):
                assert row.mr_project is not None and row.mr_iid is not None
                self._other_project(report, row.mr_project, row.mr_iid, row.name, row.env,
                                    "ledger row")
        rows = core.rows_to_look_at(
            [row for row in waiting if core.of_project(row.mr_project, project_id)],
            self.limit, self.left_alone)
        left = self._left_mrs(report, noted, project_id)
        for row in rows:
            assert row.mr_iid is not None

            def decide(mr: MergeRequest, pushed_sha: str | None,
                       row: DeployedState = row) -> core.SweepDecision:
                return core.settled_event(row, mr, pushed_sha=pushed_sha,
                                          target_branch=self.target_branch,
                                          project_id=project_id, project_path=project_path,
                                          own=self.provider.own_username)

            self._settle(report, row.mr_iid, row.name, row.env, project_id, decide)
        for iid, name, env in left:
            assert self.left_mrs is not None

            def decide_left(mr: MergeRequest, pushed_sha: str | None, name: str = name,
                            env: str = env) -> core.SweepDecision:
                return core.settled_left_event(name, env, mr, pushed_sha=pushed_sha,
                                               target_branch=self.target_branch,
                                               project_id=project_id, project_path=project_path,
                                               own=self.provider.own_username)

            settled = self._left_settled(project_id)
            self._settle(report, iid, name, env, project_id, decide_left,
                         on_missing=settled, on_settled=settled)
        for gc_iid in gc_iids:
            self._settle(report, gc_iid, *GC_KEY, project_id, lambda mr, pushed_sha:
                         core.settled_gc_event(mr, pushed_sha=pushed_sha,
                                               target_branch=self.target_branch,
                                               project_id=project_id,
                                               project_path=project_path),
                         on_missing=self._gc_mr_gone(project_id))
        if report.recorded or report.failed or report.gone:
            log(_log, logging.INFO, "MR sweep", **report.describe())
        return report

    def _unrecorded_gc_mrs(self) -> list[int]:
        """GC's MRs whose outcome is not recorded yet, oldest first, a few a pass."""
        if self.gc_pending is None:
            return []
        return core.noted_mrs_to_look_at(self.gc_pending.unrecorded(), self.left_alone)

    def _left_mrs(self, report: SweepReport, noted: list[LeftMr],
                  project_id: int) -> list[tuple[int, str, str]]:
        """MRs of the configured project rows moved on from before their outcome was
        recorded, oldest first, a few a pass; those of another project go to the report."""
        ours: dict[int, tuple[int, str, str]] = {}
        for left in noted:
            if core.of_project(left.project, project_id):
                ours.setdefault(left.iid, (left.iid, left.name, left.env))
            else:
                assert left.project is not None
                self._other_project(report, left.project, left.iid, left.name, left.env,
                                    "MR a ledger row left")
        return [ours[iid] for iid in core.noted_mrs_to_look_at(ours, self.left_alone)]

    def _left_settled(self, project_id: int) -> Callable[[int], None]:
        assert self.left_mrs is not None
        left_mrs = self.left_mrs
        return lambda iid: left_mrs.settled(project_id, iid)

    def _other_project(self, report: SweepReport, project: int, iid: int, name: str, env: str,
                       what: str) -> None:
        """An MR of another project: not read here (its iid names another MR); reported each
        pass, logged once per process."""
        report.other_project.append({"project": project, "iid": iid, "name": name, "env": env})
        if (project, iid) not in self.told_other_project:
            self.told_other_project.add((project, iid))
            log(_log, logging.WARNING, f"{what} names an MR of another project than the "
                "configured one (git.project changed?); not read, its iid is another MR here; "
                "left alone", project=project, iid=iid, name=name, env=env)

    def _gc_mr_gone(self, project_id: int) -> Callable[[int], None] | None:
        gone = self.on_gc_mr_gone
        return None if gone is None else lambda iid: gone(project_id, iid)

    def _settle(self, report: SweepReport, iid: int, name: str, env: str, project_id: int,
                decide: Callable[[MergeRequest, str | None], core.SweepDecision], *,
                on_missing: Callable[[int], None] | None = None,
                on_settled: Callable[[int], None] | None = None) -> None:
        """Read MR ``iid`` (one forge read) and feed the outcome ``decide`` makes of it to the
        handler; what happened goes into ``report``. An MR the forge does not have is handed
        to ``on_missing`` when given, else it is a failure (a deployment's row would wait on
        an outcome nobody can tell: an operator's matter, shown every pass). ``on_settled`` is
        told an MR that is settled with nothing to record (not promoter's, closed as
        superseded); one whose outcome the handler records, the handler settles itself."""
        report.looked_at += 1
        try:
            try:
                mr = self.provider.get(iid)
            except NotFoundError:
                if on_missing is None:
                    raise
                on_missing(iid)
                report.gone.append(iid)
                log(_log, logging.WARNING, "MR no longer on the forge; no longer followed",
                    iid=iid, name=name, env=env)
                return
            decision = decide(mr, self.heads.pushed_sha(project_id, iid))
            if decision.event is None:
                if decision.left_alone:
                    self.left_alone.add(iid)
                    log(_log, logging.WARNING, "settled MR not promoter's; left alone",
                        iid=iid, name=name, env=env, reason=decision.reason)
                if on_settled is not None and mr.state in core.ACTION_FOR_STATE:
                    on_settled(iid)
                return
            self.on_event(decision.event)  # the handler's recording ends a left MR's note
        except RecordingElsewhere:
            report.elsewhere.append({"iid": iid, "name": name, "env": env})
            log(_log, logging.INFO, "MR outcome being recorded by another handler; next "
                "pass looks again", iid=iid, name=name, env=env)
            return
        except PromoterError as exc:
            report.failures.append(SweepFailure(iid, name, env, exc))
            log(_log, logging.WARNING, "MR sweep could not settle an MR; next pass retries",
                iid=iid, name=name, env=env, error=exc.message)
            return
        recorded: dict[str, object] = {"iid": iid, "name": name, "env": env,
                                       "action": decision.event.action}
        if decision.event.foreign_head:
            recorded["head_pushed_by_promoter"] = False
        report.recorded.append(recorded)
        if self.metrics is not None:
            self.metrics.mr_sweep_recorded.labels(action=decision.event.action).inc()
