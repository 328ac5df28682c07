"""What promoter last did per (model, env): SQLite at ``<state_dir>/deployments.db``.

MLflow's ``model_version_alias.deleted`` carries no version and GitLab hooks must be checked
against the head sha promoter pushed, so both are remembered here. One row per (model, env);
``name`` (the deployment directory) is indexed so a second model deriving the same name is
caught before it could overwrite the first one's manifests.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from promoter.errors import TransientError
from promoter.ports.pipeline import DeployedState

DB_FILENAME = "deployments.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    model TEXT NOT NULL, env TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    status TEXT NOT NULL, mr_iid INTEGER, head_sha TEXT,
    PRIMARY KEY (model, env));
CREATE INDEX IF NOT EXISTS deployments_by_name ON deployments (name, env);
"""
_SELECT = "SELECT model, env, name, version, status, mr_iid, head_sha FROM deployments "


class SqliteLedger:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_FILENAME
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    def get(self, model: str, env: str) -> DeployedState | None:
        return self._one(_SELECT + "WHERE model = ? AND env = ?", (model, env))

    def by_deployment(self, name: str, env: str) -> DeployedState | None:
        return self._one(_SELECT + "WHERE name = ? AND env = ?", (name, env))

    def named(self, name: str) -> list[DeployedState]:
        try:
            rows = self._conn().execute(_SELECT + "WHERE name = ? ORDER BY env, model",
                                        (name,)).fetchall()
        except sqlite3.Error as exc:
            raise TransientError(f"cannot read {self.path}: {exc}") from None
        return [DeployedState(*row) for row in rows]

    def put(self, state: DeployedState) -> None:
        try:
            self._conn().execute(
                "INSERT OR REPLACE INTO deployments (model, env, name, version, status, mr_iid, "
                "head_sha) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (state.model, state.env, state.name, state.version, state.status, state.mr_iid,
                 state.head_sha))
        except sqlite3.Error as exc:
            raise TransientError(f"cannot write {self.path}: {exc}") from None

    def set_status(self, name: str, env: str, status: str) -> DeployedState | None:
        found = self.by_deployment(name, env)
        if found is None:
            return None
        updated = DeployedState(found.model, found.env, found.name, found.version, status,
                                found.mr_iid, found.head_sha)
        self.put(updated)
        return updated

    def _one(self, query: str, args: tuple[str, ...]) -> DeployedState | None:
        try:
            row = self._conn().execute(query, args).fetchone()
        except sqlite3.Error as exc:
            raise TransientError(f"cannot read {self.path}: {exc}") from None
        return DeployedState(*row) if row else None
