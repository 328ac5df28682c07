"""What promoter last did per (model, env): the ``deployments`` table of the state database.

MLflow's ``model_version_alias.deleted`` carries no version, so the version deployed is
remembered here. One row per (model, env); ``name`` (the deployment directory) is indexed so a
second model deriving the same name is caught before it could overwrite the first one's
manifests; ``deployment_names`` records which model claimed a name just before its first
proposal, so of two models racing for one name only one proposes. A model gives its name up
when every row it has under that name is decommissioned, i.e. its removal MRs merged, and no
proposal of it is under way (claimed for an environment whose row it has not written yet, see
_owners); the next model to claim the name takes it over. (The
pipeline still refuses a name whose base another model's manifests hold in the tree.) The MR
head promoter pushed is not a column here: it is read from the one record of pushed heads
(promoter.state.pushed_heads), which the git providers write when they push.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from promoter.core.results import OPEN_MR, DeploymentStatus
from promoter.ports.git import BRANCH_PREFIX, branch_for
from promoter.ports.pipeline import DeployedState
from promoter.service.queue_ops import shared_now
from promoter.state import closed_removals, left_mrs
from promoter.state.db import Connection, StateDB, state_db

# The newest head pushed to this deployment's branch for its MR (branch_for(name, env)), in
# the MR's project when the row knows it (iids restart per project).
_SELECT = f"""
SELECT d.model, d.env, d.name, d.version, d.status, d.mr_iid,
       (SELECT p.sha FROM pushed_heads AS p
        WHERE p.branch = '{BRANCH_PREFIX}/' || d.name || '/' || d.env AND p.iid = d.mr_iid
          AND (d.mr_project IS NULL OR p.project = d.mr_project)
        ORDER BY p.recorded_at DESC LIMIT 1) AS head_sha,
       d.mr_project
FROM deployments AS d
"""  # noqa: S608 - a constant prefix, no input
_LOCK = "deployments"
# How long a proposal counts as under way after its claim when its row never came: its job
# attempt died after claiming (a retry claims again) or failed for good. The claim is taken
# just before the proposal and the row written just after it, so an hour is far beyond any
# attempt that is still alive (job leases are renewed while an attempt runs, so they bound
# nothing here).
CLAIM_IN_FLIGHT_SECONDS = 3600.0
# Row statuses of a deployment that runs, or whose proposal or removal is under way.
IN_USE = frozenset({DeploymentStatus.MR_OPENED, DeploymentStatus.APPROVED,
                    DeploymentStatus.MERGED, DeploymentStatus.MERGED_UNVERIFIED,
                    DeploymentStatus.NEEDS_ATTENTION, DeploymentStatus.DECOMMISSIONING})
# Row statuses of a deployment whose proposal is under way: its MR is open (someone else's
# commits on promoter's branch included). The running and removal statuses of IN_USE are not.
PROPOSING = frozenset({DeploymentStatus.MR_OPENED, DeploymentStatus.APPROVED,
                       DeploymentStatus.NEEDS_ATTENTION})


class StateLedger:
    def __init__(self, state: Path | StateDB, *,
                 clock: Callable[[], float] | None = None) -> None:
        self.db = state_db(state)
        self.path = self.db.path
        self.clock = clock or time.time
        self._on_database_clock = clock is None  # see queue_ops.shared_now

    def get(self, model: str, env: str) -> DeployedState | None:
        return self.db.read(lambda conn: _one(conn, "d.model = ? AND d.env = ?", (model, env)))

    def by_deployment(self, name: str, env: str) -> DeployedState | None:
        return self.db.read(lambda conn: _one(conn, "d.name = ? AND d.env = ?", (name, env)))

    def owners(self, name: str) -> frozenset[str]:
        """The models owning deployment ``name``: a ledger row not decommissioned, or a claim
        (see _owners)."""
        return self.db.read(lambda conn: _owners(conn, name, self._now(conn)))

    def environments_in_use(self, name: str) -> frozenset[str]:
        """The environments where deployment ``name`` runs or a proposal of it is under way:
        rows whose MR is open or merged (not one closed, denied, invalid or failed: nothing of
        those is under way, and their environment may have no overlay for GC to remove, so
        counting them would keep a base for good), and the environment of a claim still in
        flight (a first proposal into an environment claims before it pushes; claim_name)."""
        return self._environments(name, IN_USE)

    def proposals_under_way(self, name: str) -> frozenset[str]:
        """The environments where a proposal of deployment ``name`` is under way: rows whose
        MR is open (not merged: a deployment that merely runs there is not), and the
        environment of a claim still in flight (every proposal claims just before it pushes
        and writes its row just after). What GC asks before removing an overlay it finds
        idle: a promotion into that environment would update it (core.base_reuse)."""
        return self._environments(name, PROPOSING)

    def _environments(self, name: str, statuses: frozenset[DeploymentStatus]
                      ) -> frozenset[str]:
        """Environments of ``name``'s rows in ``statuses``, and of its claim in flight."""
        def read(conn: Connection) -> frozenset[str]:
            rows = conn.execute(
                "SELECT env, status FROM deployments WHERE name = ? UNION SELECT claimed_env, "
                "'claimed' FROM deployment_names WHERE name = ? AND claimed_at > ? AND "
                "claimed_env IS NOT NULL",
                (name, name, self._now(conn) - CLAIM_IN_FLIGHT_SECONDS)).fetchall()
            return frozenset(str(env) for env, status in rows
                             if status == "claimed" or status in statuses)

        return self.db.read(read)

    def with_statuses(self, statuses: Iterable[str]) -> list[DeployedState]:
        """Every row in one of ``statuses`` that names its MR (the MR sweep's candidates)."""
        wanted = sorted(set(statuses))
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        return self.db.read(lambda conn: [DeployedState(*row) for row in conn.execute(
            _SELECT + f"WHERE d.status IN ({marks}) AND d.mr_iid IS NOT NULL "
            "ORDER BY d.mr_iid, d.name, d.env", tuple(wanted)).fetchall()])

    def put(self, state: DeployedState) -> None:
        def put(conn: Connection) -> None:
            conn.lock(_LOCK)
            _put(conn, state, self._now(conn))

        self.db.write(put)

    def claim_name(self, name: str, model: str, env: str) -> frozenset[str]:
        """Claim deployment ``name`` for ``model``; the other models owning it (see owners),
        if any, and then no claim. Under the ledger's lock (SQLite: the write transaction), so
        two models claiming one name at once cannot both get it. The claim also marks
        the model's proposal into ``env`` under way (``claimed_env``, ``claimed_at``) until that
        row is written (_put): meanwhile the name stays the model's even if its last other row
        is decommissioned. A name its owner gave up (decommissioned everywhere, nothing under
        way) is taken over: the old owner's decommissioned rows and claim go, so an MR of that
        name (by_deployment) can only mean the new owner's deployment."""

        def claim(conn: Connection) -> frozenset[str]:
            conn.lock(_LOCK)
            now = self._now(conn)
            others = _owners(conn, name, now) - {model}
            if not others:
                conn.execute("DELETE FROM deployments WHERE name = ? AND model <> ? AND "
                             "status = ?", (name, model, DeploymentStatus.DECOMMISSIONED.value))
                # Any claim left is this model's, or one given up (nothing of it under way).
                conn.execute("INSERT INTO deployment_names (name, model, claimed_env, "
                             "claimed_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                             "model = excluded.model, claimed_env = excluded.claimed_env, "
                             "claimed_at = excluded.claimed_at",
                             (name, model, env, now))
            return others

        return self.db.write(claim)

    def set_status(self, name: str, env: str, status: str) -> DeployedState | None:
        """Change the status of the deployment ``name`` in ``env``; read and write in one
        transaction, so a concurrent put() is never overwritten with stale fields."""
        return self._restatus(lambda conn: _one(conn, "d.name = ? AND d.env = ?", (name, env)),
                              status)

    def decommission_collected(self, name: str, env: str, model: str,
                               version: str | None) -> DeployedState | None:
        """Mark deployment (``name``, ``env``) decommissioned, as a merged GC MR removed its
        overlay: only while its row still names ``model`` (and ``version``, when GC recorded
        the one the overlay pinned); None (row untouched) otherwise. The GC MR was planned
        earlier, and its merge (or a re-delivery of it) can arrive after another model took
        the name over, or after the model was deployed again: that row's deployment is not
        the one the merge removed."""

        def still_collected(conn: Connection) -> DeployedState | None:
            found = _one(conn, "d.name = ? AND d.env = ?", (name, env))
            removed = found is not None and found.model == model and \
                version in (None, found.version)
            return found if removed else None

        return self._restatus(still_collected, DeploymentStatus.DECOMMISSIONED)

    def settle(self, decided_on: DeployedState, status: str, *,
               if_unchanged: bool = False) -> bool:
        """Set the status of the row ``decided_on`` was read from, only if it still names the
        same MR and version (``if_unchanged``: and still has ``decided_on``'s status); False
        (row untouched) when it moved on meanwhile.
        An MR outcome is decided on a read, then acted on with slow MLflow calls: without this
        check a late outcome of MR !5 would mark the row of MR !6, opened meanwhile, as
        settled, and !6's own outcome would then be skipped as already recorded. A reopen
        undoes one status only (``closed``): an approval recorded meanwhile must stand."""

        def still_current(conn: Connection) -> DeployedState | None:
            found = _one(conn, "d.model = ? AND d.env = ?", (decided_on.model, decided_on.env))
            same_mr = found is not None and (found.mr_project, found.mr_iid, found.version) \
                == (decided_on.mr_project, decided_on.mr_iid, decided_on.version)
            unchanged = found is not None and found.status == decided_on.status
            return found if same_mr and (unchanged or not if_unchanged) else None

        return self._restatus(still_current, status) is not None

    def _restatus(self, find: Callable[[Connection], DeployedState | None],
                  status: str) -> DeployedState | None:
        """The row ``find`` picks, with ``status``; None (nothing written) when it picks none.
        The read and the write are one transaction under the ledger's lock (PostgreSQL: no
        put() between them)."""

        def update(conn: Connection) -> DeployedState | None:
            conn.lock(_LOCK)
            found = find(conn)
            if found is None:
                return None
            updated = dataclasses.replace(found, status=status)
            _put(conn, updated, self._now(conn))
            return updated

        return self.db.write(update)

    def _now(self, conn: Connection) -> float:
        """The time claims are measured in: compared across replicas, so on PostgreSQL the
        database's clock (queue_ops.shared_now), read inside ``conn``'s transaction."""
        return shared_now(conn, self.clock(), self._on_database_clock)


def _owners(conn: Connection, name: str, now: float) -> frozenset[str]:
    """Models with a row under ``name`` not decommissioned, and the claimant unless it gave
    the name up. A claim holds while a proposal it was made for is under way: ``claimed_at``
    set (cleared when that environment's row is written) and younger than
    CLAIM_IN_FLIGHT_SECONDS, whether or not its model has rows under the name. Older, a
    first proposal that never wrote its row (its job failed for good) no longer keeps the
    name from others; a retry claims again. A claim without ``claimed_at`` counts only
    through its model's rows, or, made before claims were timed, while the model has none."""
    decommissioned = DeploymentStatus.DECOMMISSIONED.value
    return frozenset(row[0] for row in conn.execute(
        "SELECT model FROM deployments WHERE name = ? AND status <> ? "
        "UNION SELECT c.model FROM deployment_names AS c WHERE c.name = ? AND "
        "(c.claimed_at > ? OR (c.claimed_at IS NULL AND NOT EXISTS (SELECT 1 FROM "
        "deployments AS d WHERE d.name = c.name AND d.model = c.model)))",
        (name, decommissioned, name, now - CLAIM_IN_FLIGHT_SECONDS)).fetchall())


def _put(conn: Connection, state: DeployedState, now: float) -> None:
    before = _one(conn, "d.model = ? AND d.env = ?", (state.model, state.env))
    project = _mr_project(conn, state, before)
    leaves = before is not None and _other_mr(before, state.mr_iid, project)
    removal = before is not None and before.status == DeploymentStatus.DECOMMISSIONING
    if before is not None and leaves and before.mr_iid is not None \
            and (before.status in OPEN_MR or removal):
        # The row leaves an MR whose outcome is not recorded: the sweep follows it from there
        # (state.left_mrs). A removal MR is noted as such: its merge, recorded for an MR that
        # is no longer the row's, would otherwise read as a promotion's.
        left_mrs.note(conn, before.mr_project, before.mr_iid, before.name, before.env,
                      removal=removal)
    if before is not None and leaves:
        # A reopen of the MR the row leaves changes nothing now: its note is not needed.
        closed_removals.forget_deployment(conn, before.name, before.env)
    conn.execute(
        "INSERT INTO deployments (model, env, name, version, status, mr_iid, mr_project) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, env) DO UPDATE SET "
        "name = excluded.name, version = excluded.version, status = excluded.status, "
        "mr_iid = excluded.mr_iid, mr_project = excluded.mr_project",
        (state.model, state.env, state.name, state.version, state.status, state.mr_iid,
         project))
    # The row of the environment the claim was made for is written: its proposal landed, and
    # the row holds the name from now on.
    conn.execute("UPDATE deployment_names SET claimed_at = NULL WHERE name = ? AND model = ? "
                 "AND claimed_env = ?", (state.name, state.model, state.env))
    if state.status == DeploymentStatus.DECOMMISSIONED:
        # Decommissioned in its last environment (removal MRs merged): the model gives the name
        # up, in the transaction that records it. Not while a proposal of it into another
        # environment is under way (claimed, no row there yet): another model taking the name
        # now would put two models on it. Such a claim is given up once its proposal lands and
        # that row is decommissioned too, or once it is too old to be under way (_owners).
        conn.execute(
            "DELETE FROM deployment_names WHERE name = ? AND model = ? AND "
            "(claimed_at IS NULL OR claimed_at <= ?) AND NOT EXISTS "
            "(SELECT 1 FROM deployments WHERE name = ? AND model = ? AND status <> ?)",
            (state.name, state.model, now - CLAIM_IN_FLIGHT_SECONDS, state.name, state.model,
             DeploymentStatus.DECOMMISSIONED.value))


def _mr_project(conn: Connection, state: DeployedState,
                before: DeployedState | None) -> int | None:
    """The project of the MR ``state`` names: the writer's word if it gave one (a status
    change copies the row's), else the project of the head promoter pushed to that MR on the
    deployment's branch, newest first. The providers record that head as they propose, before
    the row is written, so it is the MR just proposed, in the project configured now. None:
    no MR, or none promoter pushed (then the row's, if it names the same iid)."""
    if state.mr_iid is None or state.mr_project is not None:
        return state.mr_project
    row = conn.execute("SELECT project FROM pushed_heads WHERE branch = ? AND iid = ? "
                       "ORDER BY recorded_at DESC LIMIT 1",
                       (branch_for(state.name, state.env), state.mr_iid)).fetchone()
    if row is not None:
        return int(row[0])
    return before.mr_project if before is not None and before.mr_iid == state.mr_iid else None


def _other_mr(before: DeployedState, iid: int | None, project: int | None) -> bool:
    """Whether MR ``iid`` of ``project`` is not the one the row followed: another iid, or the
    same iid in another project (``git.project`` changed). An unknown project (a row written
    before projects were recorded) is taken for the same one, as it was then."""
    if before.mr_iid != iid:
        return True
    return None not in (before.mr_project, project) and before.mr_project != project


def _one(conn: Connection, where: str, args: tuple[str, ...]) -> DeployedState | None:
    row = conn.execute(_SELECT + "WHERE " + where, args).fetchone()
    return DeployedState(*row) if row else None
