"""The state database's schema: ordered migrations, versioned in ``PRAGMA user_version``.

Each entry of MIGRATIONS moves the file one version forward. All pending steps run in one
``BEGIN IMMEDIATE`` transaction that re-reads the version first, so several processes opening
an old file at once migrate it exactly once, and a failed step leaves the file as it was.
Steps are append-only: never edit a released one, add the next.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from promoter.errors import ConfigError
from promoter.state.sqlite import in_transaction

MIGRATIONS: tuple[str, ...] = (
    # 1: the job queue: jobs, webhook deliveries seen, per-step results.
    """
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        model            TEXT NOT NULL,
        version          TEXT NOT NULL,
        env              TEXT NOT NULL,
        action           TEXT NOT NULL,
        state            TEXT NOT NULL
                         CHECK (state IN ('queued', 'running', 'retrying', 'done', 'dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        payload          TEXT NOT NULL DEFAULT '{}',
        result           TEXT NOT NULL DEFAULT '{}',
        reason           TEXT,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        next_run_at      REAL NOT NULL,
        lease_owner      TEXT,
        lease_expires_at REAL
    );
    CREATE INDEX jobs_by_model_env ON jobs (model, env, id);
    CREATE INDEX jobs_unfinished ON jobs (id)
        WHERE state IN ('queued', 'running', 'retrying');
    CREATE TABLE deliveries (
        source      TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        job_id      INTEGER REFERENCES jobs (id),
        received_at REAL NOT NULL,
        PRIMARY KEY (source, delivery_id)
    ) WITHOUT ROWID;
    CREATE TABLE job_steps (
        job_id      INTEGER NOT NULL REFERENCES jobs (id),
        name        TEXT NOT NULL,
        result      TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (job_id, name)
    ) WITHOUT ROWID;
    """,
    # 2: delivery ids are forgotten after a retention period; find old ones without a scan.
    """
    CREATE INDEX deliveries_by_age ON deliveries (received_at);
    """,
    # 3: everything else that used to live in its own file. GitLab hook deliveries join the
    # one dedupe table (source 'gitlab'), with the answer given to the first delivery.
    """
    ALTER TABLE deliveries ADD COLUMN status TEXT;
    CREATE TABLE deployments (
        model   TEXT NOT NULL,
        env     TEXT NOT NULL,
        name    TEXT NOT NULL,
        version TEXT NOT NULL,
        status  TEXT NOT NULL,
        mr_iid  INTEGER,
        PRIMARY KEY (model, env)
    ) WITHOUT ROWID;
    CREATE INDEX deployments_by_name ON deployments (name, env);
    CREATE TABLE pushed_heads (
        project     INTEGER NOT NULL,
        iid         INTEGER NOT NULL,
        branch      TEXT NOT NULL,
        sha         TEXT NOT NULL,
        version     TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (project, iid)
    ) WITHOUT ROWID;
    CREATE INDEX pushed_heads_by_branch ON pushed_heads (branch, iid);
    CREATE TABLE reconcile_observed (
        model         TEXT NOT NULL,
        env           TEXT NOT NULL,
        alias_version TEXT,
        stage_version TEXT,
        PRIMARY KEY (model, env)
    ) WITHOUT ROWID;
    CREATE TABLE reconcile_cursor (
        id                INTEGER PRIMARY KEY CHECK (id = 1),
        versions_since_ms INTEGER NOT NULL
    );
    CREATE TABLE local_mrs (
        iid                INTEGER PRIMARY KEY AUTOINCREMENT,
        source_branch      TEXT NOT NULL,
        target_branch      TEXT NOT NULL,
        title              TEXT NOT NULL,
        description        TEXT NOT NULL,
        labels             TEXT NOT NULL,
        state              TEXT NOT NULL,
        sha                TEXT,
        approvals_required INTEGER NOT NULL,
        approved_by        TEXT NOT NULL,
        auto_merge_sha     TEXT,
        merge_commit_sha   TEXT,
        created_at         REAL NOT NULL,
        updated_at         REAL NOT NULL
    );
    CREATE UNIQUE INDEX local_mrs_one_open ON local_mrs (source_branch)
        WHERE state = 'opened';
    CREATE TABLE local_mr_notes (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        iid        INTEGER NOT NULL REFERENCES local_mrs (iid),
        body       TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE state_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    """,
    # 4: Argo CD status per (deployment, environment, cluster) and the last summary written
    # back per (deployment, environment); notifications seen use the deliveries table
    # (source 'argocd').
    """
    CREATE TABLE cluster_status (
        name        TEXT NOT NULL,
        env         TEXT NOT NULL,
        cluster     TEXT NOT NULL,
        sync        TEXT NOT NULL,
        health      TEXT NOT NULL,
        revision    TEXT,
        since       TEXT,
        application TEXT NOT NULL,
        PRIMARY KEY (name, env, cluster)
    ) WITHOUT ROWID;
    CREATE TABLE cluster_summaries (
        name     TEXT NOT NULL,
        env      TEXT NOT NULL,
        digest   TEXT NOT NULL,
        deployed INTEGER NOT NULL,
        PRIMARY KEY (name, env)
    ) WITHOUT ROWID;
    """,
    # 5: beside the summary last told (digest, deployed: MLflow tags, audit, MR note) the
    # telling under way, so a process killed between storing an observation and telling it
    # leaves the change for the next observation to tell (promoter.service.cluster_feedback).
    """
    ALTER TABLE cluster_summaries ADD COLUMN telling_digest TEXT;
    ALTER TABLE cluster_summaries ADD COLUMN telling_since REAL;
    """,
    # 6: the model each deployment name belongs to, claimed before its first proposal
    # (promoter.service.ledger.claim_name); one model per name, in every environment.
    """
    CREATE TABLE deployment_names (
        name  TEXT PRIMARY KEY,
        model TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 7: the registered model each pushed MR head proposes. A deployment name can change
    # hands, so the ledger row of (name, env) may be another model's than an older MR's of
    # that branch (promoter.service.outcomes). NULL: pushed before this was recorded.
    # And the proposal each claim was last made for (environment, when; claimed_at NULL once
    # its row is written, or claimed before this was recorded): a model keeps a name it
    # decommissioned everywhere while a proposal of it into another environment is under way.
    # Claims schema 6 kept for models whose every row under the name is decommissioned are
    # given up here.
    """
    ALTER TABLE pushed_heads ADD COLUMN model TEXT;
    ALTER TABLE deployment_names ADD COLUMN claimed_env TEXT;
    ALTER TABLE deployment_names ADD COLUMN claimed_at REAL;
    DELETE FROM deployment_names WHERE EXISTS (SELECT 1 FROM deployments AS d
        WHERE d.name = deployment_names.name AND d.model = deployment_names.model)
      AND NOT EXISTS (SELECT 1 FROM deployments AS d
        WHERE d.name = deployment_names.name AND d.model = deployment_names.model
          AND d.status <> 'decommissioned');
    """,
    # 8: when each cluster's health last changed (Argo CD's status.health.lastTransitionTime),
    # ordering two observations with one reconciledAt (promoter.service.cluster_status_store).
    """
    ALTER TABLE cluster_status ADD COLUMN health_changed_at TEXT;
    """,
    # 9: the stage each reconcile record's stage target was read for, so that an environment
    # added or whose trigger's stage changed is looked up (NULL: read before this was kept,
    # looked up once).
    """
    ALTER TABLE reconcile_observed ADD COLUMN stage_trigger TEXT;
    """,
    # 10: models whose change a reconcile pass could not look at (a failed stage lookup),
    # looked up by each pass until one succeeds; the version cursor moves on without them.
    """
    CREATE TABLE reconcile_retry (
        model TEXT PRIMARY KEY
    ) WITHOUT ROWID;
    """,
    # 11: the GitLab project (numeric id) of the MR each ledger row follows: iids restart per
    # project, so after git.project changes a bare iid names another MR (service.ledger).
    # NULL: written before this was recorded, read as the configured project's.
    """
    ALTER TABLE deployments ADD COLUMN mr_project INTEGER;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the file to SCHEMA_VERSION; returns the version found before."""
    found = _version(conn)
    if found < SCHEMA_VERSION:
        found = in_transaction(conn, _apply_pending)
    if found > SCHEMA_VERSION:
        raise ConfigError(f"{path} was written by a newer promoter "
                          f"(schema {found}, this one knows {SCHEMA_VERSION})",
                          hint="upgrade promoter, or point PROMOTER_STATE_DIR elsewhere")
    return found


def _apply_pending(conn: sqlite3.Connection) -> int:
    found = _version(conn)  # re-read under the write lock: another process may have won
    for version in range(found, SCHEMA_VERSION):
        for statement in _statements(MIGRATIONS[version]):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {max(found, SCHEMA_VERSION)}")
    return found


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction first; split instead (no ';' in literals).
    return [part.strip() for part in script.split(";") if part.strip()]
