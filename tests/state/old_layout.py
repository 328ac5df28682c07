"""A state directory in the old six-file layout, as the code before state.db wrote it.

The CREATE statements are copied verbatim from the old modules (promoter/service/queue_schema.py,
ledger.py, reconcile.py, gitlab_hook.py, adapters/gitlab_ledger.py, adapters/local_mrs.py at
commit 2d892f9) — test data, deliberately not imported from today's code, so a change to the new
schema cannot quietly change what "the old layout" means here.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

OLD_QUEUE = """
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
CREATE INDEX deliveries_by_age ON deliveries (received_at);
PRAGMA user_version = 2;
"""
OLD_LEDGER = """
CREATE TABLE IF NOT EXISTS deployments (
    model TEXT NOT NULL, env TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    status TEXT NOT NULL, mr_iid INTEGER, head_sha TEXT,
    PRIMARY KEY (model, env));
CREATE INDEX IF NOT EXISTS deployments_by_name ON deployments (name, env);
"""
OLD_RECONCILE = """
CREATE TABLE IF NOT EXISTS observed (
    model TEXT NOT NULL, env TEXT NOT NULL, alias_version TEXT, stage_version TEXT,
    PRIMARY KEY (model, env)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 1),
    versions_since_ms INTEGER NOT NULL);
"""
OLD_HOOKS = ("CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, "
             "received_at REAL NOT NULL, status TEXT NOT NULL)")
OLD_PUSHES = """
CREATE TABLE IF NOT EXISTS pushes (
  project INTEGER NOT NULL, iid INTEGER NOT NULL, branch TEXT NOT NULL, sha TEXT NOT NULL,
  version TEXT NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (project, iid))
"""
OLD_LOCAL_MRS = """
CREATE TABLE IF NOT EXISTS mrs (
  iid INTEGER PRIMARY KEY AUTOINCREMENT, source_branch TEXT NOT NULL,
  target_branch TEXT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
  labels TEXT NOT NULL, state TEXT NOT NULL, sha TEXT, approvals_required INTEGER NOT NULL,
  approved_by TEXT NOT NULL, auto_merge_sha TEXT, merge_commit_sha TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_mr ON mrs (source_branch) WHERE state = 'opened';
CREATE TABLE IF NOT EXISTS notes (
  id INTEGER PRIMARY KEY AUTOINCREMENT, iid INTEGER NOT NULL, body TEXT NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL);
"""
SHA_A, SHA_B, SHA_LOCAL = "a" * 40, "b" * 40, "c" * 40


def write_old_layout(state_dir: Path) -> None:
    """Six files with real rows in every table, in WAL mode as the old code left them."""
    state_dir.mkdir(parents=True, exist_ok=True)
    _write(state_dir / "promoter.db", OLD_QUEUE, [
        ("INSERT INTO jobs (id, model, version, env, action, state, attempts, payload, result, "
         "reason, created_at, updated_at, next_run_at, lease_owner, lease_expires_at) VALUES "
         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
             (1, "fraud", "7", "production", "promote", "done", 1, '{"alias":"production"}',
              '{"mr_url":"http://gitlab/!12"}', None, 10.0, 11.0, 10.0, None, None),
             (2, "churn", "3", "staging", "promote", "dead", 8, "{}", "{}",
              "PermanentError: 403", 12.0, 13.0, 12.0, None, None),
             (5, "fraud", "8", "production", "promote", "queued", 0, "{}", "{}", None,
              14.0, 14.0, 14.0, None, None)]),
        ("INSERT INTO job_steps VALUES (?, ?, ?, ?)", [
            (1, "render", '{"files":4}', 10.5), (1, "image", '{"digest":"sha256:ab"}', 10.6)]),
        ("INSERT INTO deliveries VALUES (?, ?, ?, ?)", [
            ("mlflow", "m-1", 1, 10.0), ("databricks", "d-1", 2, 12.0),
            ("mlflow", "m-ignored", None, 13.0)]),
    ])
    _write(state_dir / "deployments.db", OLD_LEDGER, [
        ("INSERT INTO deployments VALUES (?, ?, ?, ?, ?, ?, ?)", [
            ("fraud", "production", "fraud", "7", "mr_opened", 12, SHA_A),
            ("churn", "staging", "churn", "3", "merged", 3, SHA_LOCAL),
            ("old", "staging", "old", "1", "closed", None, None)]),
    ])
    _write(state_dir / "reconcile.db", OLD_RECONCILE, [
        ("INSERT INTO observed VALUES (?, ?, ?, ?)", [
            ("fraud", "production", "7", None), ("churn", "staging", None, "3")]),
        ("INSERT INTO cursor VALUES (1, ?)", [(1_700_000_000_123,)]),
    ])
    _write(state_dir / "gitlab-hooks.db", OLD_HOOKS, [
        ("INSERT INTO deliveries VALUES (?, ?, ?)", [
            ("hook-1", 20.0, "accepted"), ("hook-2", 21.0, "human_commit")]),
    ])
    _write(state_dir / "gitlab-pushes.db", OLD_PUSHES, [
        ("INSERT INTO pushes VALUES (?, ?, ?, ?, ?, ?)", [
            (42, 12, "promote/fraud/production", SHA_A, "7", 30.0),
            (42, 13, "promote/other/staging", SHA_B, "2", 31.0)]),
    ])
    _write(state_dir / "local-mrs.db", OLD_LOCAL_MRS, [
        ("INSERT INTO mrs (iid, source_branch, target_branch, title, description, labels, state,"
         " sha, approvals_required, approved_by, auto_merge_sha, merge_commit_sha, created_at,"
         " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
             (3, "promote/churn/staging", "main", "Promote churn v3", "body",
              json.dumps(["promoter"]), "merged", SHA_LOCAL, 1, json.dumps(["alice"]), None,
              "d" * 40, 40.0, 41.0),
             (4, "promote/churn/staging", "main", "Promote churn v4", "body", "[]", "opened",
              None, 0, "[]", None, None, 42.0, 42.0)]),
        ("INSERT INTO notes (id, iid, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", [
            (1, 3, "<!-- promoter:summary --> ok", 40.0, 40.5)]),
    ])


def _write(path: Path, schema: str, inserts: list[tuple[str, list[tuple[object, ...]]]]) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(schema)
        for sql, rows in inserts:
            db.executemany(sql, rows)
