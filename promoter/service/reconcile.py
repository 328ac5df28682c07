"""The reconcile loop: read MLflow's current state, enqueue what differs from the last pass.

MLflow OSS sends no webhook for legacy stage transitions, and a webhook sent while promoter
was down is lost for good, so this loop — not the webhooks — is what makes promoter lossless.
The same holds for GitLab's Merge Request Hook: each pass of the leader also runs the MR sweep
(promoter.service.mr_sweep), which records merges and closes whose hook never arrived.
The last observed target of every (model, env) and the version-change cursor are kept in the
state database (``<state_dir>/state.db``); the queue's own coalescing makes enqueueing
something a webhook already enqueued harmless.

With PostgreSQL state several replicas share the database and exactly one of them runs the
passes: the holder of the ``reconcile`` leadership (StateDB.leadership, an advisory lock held
by its session; `promoter reconcile --once` takes it too, for its one pass). The others try
again every FOLLOWER_RETRY_SECONDS and take over when the leader's session ends — when it
stops, crashes or is killed. With SQLite every process leads, as before.

Cost per pass: one paged listing of registered models (with their aliases), plus the versions
updated since the cursor (read newest first, stopping at the cursor), plus one stage lookup per
model among those or whose registered model changed since the cursor (a version deleted, an
alias set: looked up each pass until a version's update moves the cursor past it) or whose
lookup failed in an earlier pass (until one succeeds) or whose record was read for another
stage than its trigger's (once per model after an environment is added or its stage changed,
and after an upgrade from records without it), plus one read of each registered model
recorded (or deployed by its newest job) but missing from the listing (deleted, usually:
read once, then decommissioned), plus one query for the newest job of each (model, env).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from promoter.core import reconcile as core
from promoter.core.reconcile import Observed
from promoter.errors import (
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USER,
    AuthError,
    NotFoundError,
    PermanentError,
    PromoterError,
    TransientError,
)
from promoter.service import intake
from promoter.service.logs import log
from promoter.state.db import Connection, StateDB, state_db

if TYPE_CHECKING:
    from promoter.core.events import Triggers
    from promoter.core.jobs import JobKey
    from promoter.ports.registry import Registry
    from promoter.service.metrics import Metrics
    from promoter.service.queue import JobQueue
    from promoter.settings import Settings

_log = logging.getLogger("promoter.reconcile")
# Versions updated this long before the cursor are read again: a transaction that committed
# late with an earlier timestamp is not missed. Costs a few re-reads per pass.
CURSOR_SLACK_MS = 5_000
# A follower asks for the lead this often (or every interval, if that is shorter).
FOLLOWER_RETRY_SECONDS = 5.0
# The leadership (StateDB.leadership) of the loop, and of `promoter reconcile --once`.
LEADERSHIP = "reconcile"
# Transaction locks (Connection.lock) of the writes to a model's record and to the cursor.
_OBSERVED_LOCK = "reconcile_observed:"
_CURSOR_LOCK = "reconcile_cursor"


@dataclass
class PassReport:
    models: int = 0
    changed_versions: int = 0
    stage_lookups: int = 0
    jobs: list[dict[str, object]] = field(default_factory=list)
    # Models whose stage lookup failed this pass ({"model", "error", "kind"}): their aliases
    # were still observed, their stages are looked up by each pass until one succeeds.
    failed: list[dict[str, str]] = field(default_factory=list)
    # The pass stopped before this model's writes: leadership was lost meanwhile.
    stopped_at: str | None = None
    # Models the listing missed that MLflow still has: kept as recorded, listed next pass.
    unlisted: list[str] = field(default_factory=list)

    def fail(self, model: str, exc: PromoterError) -> None:
        self.failed.append({"model": model, "error": exc.message, "kind": exc.kind})

    @property
    def exit_code(self) -> int:
        """What `reconcile --once` ends with for the failures: 1 when one was refused (by
        MLflow or a proxy before it: a fault to fix), else 3 (MLflow may answer next time)."""
        if not self.failed:
            return EXIT_OK
        if any(f.get("kind", TransientError.kind) != TransientError.kind for f in self.failed):
            return EXIT_USER
        return EXIT_UNEXPECTED

    def describe(self) -> dict[str, object]:
        return {"models": self.models, "changed_versions": self.changed_versions,
                "stage_lookups": self.stage_lookups, "jobs": self.jobs,
                "created": sum(1 for job in self.jobs if job.get("created")),
                "failed": self.failed, "unlisted": self.unlisted,
                "stopped_at": self.stopped_at}


class ReconcileState:
    """The last observed targets and the version cursor (tables of the state database)."""

    def __init__(self, state: Path | StateDB) -> None:
        self.db = state_db(state)
        self.path = self.db.path

    def close(self) -> None:
        self.db.close()

    def observed(self) -> dict[str, dict[str, Observed]]:
        by_model: dict[str, dict[str, Observed]] = {}
        rows = self.db.read(lambda conn: conn.execute(
            "SELECT model, env, alias_version, stage_version, stage_trigger "
            "FROM reconcile_observed").fetchall())
        for model, env, alias_version, stage_version, stage_trigger in rows:
            by_model.setdefault(model, {})[env] = Observed(alias_version, stage_version,
                                                           stage_trigger)
        return by_model

    def cursor(self) -> int:
        row = self.db.read(lambda conn: conn.execute(
            "SELECT versions_since_ms FROM reconcile_cursor WHERE id = 1").fetchone())
        return int(row[0]) if row else 0

    def save(self, model: str, current: dict[str, Observed]) -> None:
        def replace(conn: Connection) -> None:
            # PostgreSQL (READ COMMITTED): a second writer's DELETE, blocked by the first's
            # rows, matched none of the rows that first one inserted and its INSERT broke the
            # primary key (StateConflict). The advisory lock, taken before the DELETE, makes
            # it wait and start from the committed rows: the last writer's set is the record,
            # whole. (An upsert would still leave the environments it dropped to a DELETE.)
            # SQLite: a no-op, its write transaction already excludes every other.
            conn.lock(_OBSERVED_LOCK + model)
            conn.execute("DELETE FROM reconcile_observed WHERE model = ?", (model,))
            conn.executemany(
                "INSERT INTO reconcile_observed (model, env, alias_version, stage_version, "
                "stage_trigger) VALUES (?, ?, ?, ?, ?)",
                [(model, env, o.alias_version, o.stage_version, o.stage_trigger)
                 for env, o in current.items()])

        self.db.write(replace)

    def retry(self) -> set[str]:
        """Models whose change a pass could not look at: each pass looks them up."""
        return {row[0] for row in self.db.read(lambda conn: conn.execute(
            "SELECT model FROM reconcile_retry").fetchall())}

    def save_cursor(self, since_ms: int, retry: Iterable[str] | None = None) -> None:
        """The cursor, and with it (unless None) the models to look up again: the cursor
        moves past their changes only together with the note that they are still due."""
        def replace(conn: Connection) -> None:
            # As in save, taken first: the cursor and its retry list are replaced together by
            # the last writer, so each pair stays one pass's (no GREATEST on the cursor alone:
            # it could move past a model missing from the list it is paired with). The
            # cursor's upsert row-locks it too, but only while it stays the first statement.
            conn.lock(_CURSOR_LOCK)
            conn.execute(
                "INSERT INTO reconcile_cursor VALUES (1, ?) ON CONFLICT (id) DO UPDATE "
                "SET versions_since_ms = excluded.versions_since_ms", (since_ms,))
            if retry is not None:
                conn.execute("DELETE FROM reconcile_retry")
                conn.executemany("INSERT INTO reconcile_retry (model) VALUES (?)",
                                 [(model,) for model in sorted(set(retry))])

        self.db.write(replace)


def reconcile_once(settings: Settings, registry: Registry, queue: JobQueue,
                   state: ReconcileState, metrics: Metrics | None = None, *,
                   slack_ms: int = CURSOR_SLACK_MS,
                   leading: Callable[[], bool] | None = None) -> PassReport:
    """One pass. A model's record is updated only after its jobs are durably enqueued, so a
    pass interrupted by a registry or queue failure is simply repeated next time. One model's
    stage lookup failing (a timeout on a model with very many versions) does not stop the
    pass for the models after it: its aliases are still observed, and it is noted
    (ReconcileState.retry) so that each later pass looks its stages up again until one
    succeeds, while the version cursor moves on past the other models' changes.
    ``leading`` (the replicated loop's leadership check) is asked before each model's writes:
    a leader whose session was lost mid-pass (a successor may be running its own pass by
    then) stops there, and leaves the cursor where it was."""
    triggers = intake.triggers(settings)
    report = PassReport()
    recorded = state.observed()
    # Read before MLflow: a job enqueued meanwhile (a webhook's) is then either in this view
    # or asked for what MLflow shows afterwards.
    asked = _newest_jobs(queue, triggers)
    since = state.cursor()
    newest = since
    # Models a pass could not look at: looked up now whatever changed. A lookup reads all of
    # a model's stages, so one that succeeds later sees every change it missed.
    retry = state.retry()
    retry_next: set[str] = set()
    changed_models: set[str] = set()   # models with a version among those read
    for version in registry.versions_updated_since(max(0, since - slack_ms)):
        report.changed_versions += 1
        changed_models.add(version.model)
        newest = max(newest, version.last_updated_ms)
    seen: set[str] = set()
    for model in registry.models():
        seen.add(model.name)
        report.models += 1
        previous = recorded.get(model.name, {})
        stages = None
        # A deleted version is not among the versions updated, but its model's timestamp
        # moves: the stage it held may have been the target. The timestamp only asks for a
        # lookup; it never moves the cursor, which then could pass a version changed after
        # the versions were read (the models are listed page by page, later).
        changed = model.name in changed_models or model.last_updated_ms >= since - slack_ms
        if (changed or model.name in retry
                or core.stages_outdated(triggers, previous)):
            try:
                stages = registry.stage_versions(model.name)
                report.stage_lookups += 1
            except NotFoundError as exc:  # deleted since the listing: next pass sees it gone
                log(_log, logging.WARNING, "model skipped", model=model.name, error=exc.message)
                continue
            except (TransientError, PermanentError, AuthError) as exc:
                # Only MLflow's own "does not exist" says the model is gone; any other
                # refusal (a proxy's bare 404, a 400) says nothing about it, so the model
                # is a failure of this pass, looked up again by the next. So is a 403
                # on this one model (a per-model permission): the models after it are still
                # reconciled. Credentials refused for everything fail the listing above,
                # and with it the whole pass.
                log(_log, logging.WARNING, "stage lookup failed; looked up again next pass",
                    model=model.name, error=exc.message)
                report.fail(model.name, exc)
                retry_next.add(model.name)
        current = core.observe(triggers, model.aliases, stages, previous)
        if not _apply(model.name, current, previous, asked.get(model.name, {}), queue, state,
                      report, leading):
            return _stopped(report)
    # Registered models deleted: those recorded, and those only a job deploys (a delivered
    # hook promoted the model, deleted before any pass listed it). Missing from the listing
    # is not enough: MLflow's SQL store pages by offset, so a model deleted on an earlier page
    # mid-listing shifts a live one past the page boundary unseen. Each is asked for directly;
    # one that is there (or cannot be asked about) keeps its record, and is looked up again
    # next pass if its versions changed (or it was due already). One confirmed gone before
    # (its record wiped, its newest jobs decommissions) is not asked again.
    maybe_live = set(recorded) | core.deployed_by_jobs(asked) | changed_models | retry
    for gone in sorted(maybe_live - seen):
        if not _confirmed_gone(registry, gone, report):
            if gone in changed_models or gone in retry:
                retry_next.add(gone)
            continue
        if not _apply(gone, {}, recorded.get(gone, {}), asked.get(gone, {}), queue, state,
                      report, leading):
            return _stopped(report)
    if leading is not None and not leading():   # the cursor is the new leader's now
        return _stopped(report)
    state.save_cursor(newest, retry_next)
    if metrics is not None:
        metrics.reconcile_enqueued.inc(sum(1 for job in report.jobs if job.get("created")))
    log(_log, logging.INFO, "reconcile pass", **report.describe())
    return report


def _confirmed_gone(registry: Registry, model: str, report: PassReport) -> bool:
    """Whether MLflow itself says ``model``, missing from the listing, does not exist."""
    try:
        registry.aliases(model)   # the registered model itself, not a page of the listing
    except NotFoundError:
        return True
    except (TransientError, PermanentError, AuthError) as exc:
        log(_log, logging.WARNING, "model missing from the listing could not be looked up; "
            "looked at again next pass", model=model, error=exc.message)
        report.fail(model, exc)
        return False
    log(_log, logging.WARNING, "model missing from the listing still exists (the listing "
        "shifted while it was paged); looked at again next pass", model=model)
    report.unlisted.append(model)
    return False


def _newest_jobs(queue: JobQueue, triggers: Triggers) -> dict[str, dict[str, JobKey]]:
    """{model: {env: the key its newest job stands for}} for the environments triggers name
    (once done, the version it resolved: JobQueue.newest_keys)."""
    by_model: dict[str, dict[str, JobKey]] = {}
    for (model, env), key in queue.newest_keys().items():
        if env in triggers:
            by_model.setdefault(model, {})[env] = key
    return by_model


def _apply(model: str, current: dict[str, Observed], previous: dict[str, Observed],
           asked: dict[str, JobKey], queue: JobQueue, state: ReconcileState,
           report: PassReport, leading: Callable[[], bool] | None) -> bool:
    """Enqueue and record what changed for ``model``, or what its newest jobs did not ask
    for; False (nothing written) when this process no longer leads."""
    planned = core.plan(model, current, previous, asked)
    if not planned and current == previous:
        return True
    if leading is not None and not leading():
        report.stopped_at = model
        return False
    for stored in intake.enqueue(queue, planned, source="reconcile"):
        report.jobs.append(stored.describe())
    state.save(model, current)
    return True


def _stopped(report: PassReport) -> PassReport:
    log(_log, logging.WARNING, "reconcile leadership lost mid-pass; stopped before its "
        "writes (the new leader's pass covers the rest)", **report.describe())
    return report


def run_periodically(settings: Settings, registry: Registry, queue: JobQueue,
                     stop_wait: Callable[[float], bool], metrics: Metrics | None = None,
                     mr_sweep: Callable[[], object] | None = None,
                     failed_deliveries: Callable[[], object] | None = None) -> None:
    """Run passes every ``server.reconcile_interval_seconds`` while this process holds the
    reconcile leadership, until ``stop_wait(seconds)`` is true (pass ``threading.Event().wait``).
    Each pass also handles again the GitLab deliveries that failed (``failed_deliveries``:
    GitLabHookHandler.retry_failed), then runs ``mr_sweep`` (promoter.service.mr_sweep: MR
    outcomes whose webhook was lost), after MLflow's. Failures are logged and retried next
    interval."""
    interval = settings.server.reconcile_interval_seconds
    if interval <= 0:
        return
    state = ReconcileState(queue.db)  # the queue's database; the queue closes it
    leadership = queue.db.leadership(LEADERSHIP)
    leading = False
    try:
        while True:
            was_leading, leading = leading, leadership.held()
            if leading != was_leading:
                log(_log, logging.INFO, "reconcile leadership " + ("taken" if leading
                                                                   else "lost"))
            if metrics is not None:
                metrics.reconcile_leader.set(1 if leading else 0)
            if leading:
                _pass(settings, registry, queue, state, metrics, leadership.held)
                # Asked again: a pass can take long enough for the lead to move meanwhile.
                if failed_deliveries is not None and leadership.held():
                    _sweep(failed_deliveries, "handling failed GitLab deliveries again")
                if mr_sweep is not None and leadership.held():
                    _sweep(mr_sweep, "MR sweep")
            if stop_wait(interval if leading else min(interval, FOLLOWER_RETRY_SECONDS)):
                return
    finally:
        leadership.release()  # a successor need not wait for this process to exit
        if metrics is not None:
            metrics.reconcile_leader.set(0)


def _pass(settings: Settings, registry: Registry, queue: JobQueue, state: ReconcileState,
          metrics: Metrics | None, leading: Callable[[], bool]) -> None:
    try:
        reconcile_once(settings, registry, queue, state, metrics, leading=leading)
    except TransientError as exc:
        log(_log, logging.WARNING, "reconcile pass failed; retrying next interval",
            error=exc.message)
    except Exception as exc:  # a bug must not stop the loop that makes us lossless
        _log.exception("reconcile pass crashed: %s", type(exc).__name__)


def _sweep(sweep: Callable[[], object], what: str) -> None:
    """A sweep, apart from MLflow's pass and the other sweep: a forge outage must not stop
    them."""
    try:
        sweep()
    except TransientError as exc:
        log(_log, logging.WARNING, f"{what} failed; retrying next interval", error=exc.message)
    except Exception as exc:  # a bug must not stop the loop that makes us lossless
        _log.exception("%s crashed: %s", what, type(exc).__name__)
