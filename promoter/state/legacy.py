"""Import a state directory in the old layout (six SQLite files) into state.db, once.

Up to this release promoter kept its state in ``promoter.db`` (queue, dedupe),
``deployments.db`` (ledger), ``reconcile.db`` (reconcile cursor), ``gitlab-hooks.db`` (GitLab
hook dedupe), ``gitlab-pushes.db`` (pushed MR heads) and ``local-mrs.db`` (local provider MRs).
On first start every row is read from them, written into state.db in one transaction (with a
marker, so a second process starting at the same time imports nothing twice), and the old
files are then moved to ``<state_dir>/legacy/``. A file that cannot be read stops promoter with
a ConfigError: silently starting without its rows would re-run or forget promotions.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promoter.errors import ConfigError
from promoter.ports.git import branch_for

if TYPE_CHECKING:
    from promoter.state.db import Connection, StateDB

LEGACY_DIR = "legacy"
MARKER = "legacy_import"
# The local provider's project id: ledger heads with no GitLab push record were its pushes.
LOCAL_PROJECT_ID = 0
Rows = list[tuple[Any, ...]]

# old file -> [(old query, new table, new columns)], in foreign-key order.
COPIES: dict[str, Sequence[tuple[str, str, str]]] = {
    "promoter.db": (
        ("SELECT id, model, version, env, action, state, attempts, payload, result, reason, "
         "created_at, updated_at, next_run_at, lease_owner, lease_expires_at FROM jobs", "jobs",
         "id, model, version, env, action, state, attempts, payload, result, reason, "
         "created_at, updated_at, next_run_at, lease_owner, lease_expires_at"),
        ("SELECT job_id, name, result, recorded_at FROM job_steps", "job_steps",
         "job_id, name, result, recorded_at"),
        ("SELECT source, delivery_id, job_id, received_at FROM deliveries", "deliveries",
         "source, delivery_id, job_id, received_at"),
    ),
    "gitlab-hooks.db": (
        ("SELECT 'gitlab', key, NULL, received_at, status FROM deliveries", "deliveries",
         "source, delivery_id, job_id, received_at, status"),
    ),
    "gitlab-pushes.db": (
        ("SELECT project, iid, branch, sha, version, recorded_at FROM pushes", "pushed_heads",
         "project, iid, branch, sha, version, recorded_at"),
    ),
    "deployments.db": (
        ("SELECT model, env, name, version, status, mr_iid FROM deployments", "deployments",
         "model, env, name, version, status, mr_iid"),
    ),
    "reconcile.db": (
        ("SELECT model, env, alias_version, stage_version FROM observed", "reconcile_observed",
         "model, env, alias_version, stage_version"),
        ("SELECT id, versions_since_ms FROM cursor", "reconcile_cursor", "id, versions_since_ms"),
    ),
    "local-mrs.db": (
        ("SELECT iid, source_branch, target_branch, title, description, labels, state, sha, "
         "approvals_required, approved_by, auto_merge_sha, merge_commit_sha, created_at, "
         "updated_at FROM mrs", "local_mrs",
         "iid, source_branch, target_branch, title, description, labels, state, sha, "
         "approvals_required, approved_by, auto_merge_sha, merge_commit_sha, created_at, "
         "updated_at"),
        ("SELECT id, iid, body, created_at, updated_at FROM notes", "local_mr_notes",
         "id, iid, body, created_at, updated_at"),
    ),
}
OLD_FILES = tuple(COPIES)
_LEDGER_HEADS = "SELECT name, env, mr_iid, head_sha, version FROM deployments " \
                "WHERE head_sha IS NOT NULL AND mr_iid IS NOT NULL"


def import_old_layout(db: StateDB) -> list[Path]:
    """Import and move away whatever old-layout files sit beside ``db``; returns them."""
    state_dir = db.path.parent
    present = [state_dir / name for name in OLD_FILES if (state_dir / name).exists()]
    if not present:
        return []
    try:
        # Read and copy under state.db's write lock: a second process starting at the same
        # time waits here, then finds the marker and copies nothing.
        db.write(lambda conn: _import(conn, present))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"could not import the old state files in {state_dir} into {db.path.name}: {exc}",
            hint=f"stop every promoter process and start again; if {db.path.name} already "
                 "holds state, move the old *.db files out of the directory") from exc
    try:
        _move_away(present)
    except OSError as exc:  # the rows are safe in state.db (and the marker stops a re-import)
        raise ConfigError(f"imported the old state files in {state_dir}, but could not move "
                          f"them to {LEGACY_DIR}/: {exc.strerror}",
                          hint=f"move {', '.join(p.name for p in present)} out of {state_dir} "
                               "yourself, then start again") from None
    return present


def _import(conn: Connection, present: list[Path]) -> None:
    if conn.execute("SELECT 1 FROM state_meta WHERE key = ?", (MARKER,)).fetchone():
        return  # another process imported them first; only the files are left to move
    rows = {path.name: _read(path, COPIES[path.name]) for path in present}  # all, or none
    heads = rows.get("deployments.db", {}).get("heads", [])
    _insert(conn, rows, heads)


def _read(path: Path, copies: Sequence[tuple[str, str, str]]) -> dict[str, Rows]:
    queries = [(table, query) for query, table, _ in copies]
    if path.name == "deployments.db":
        queries.append(("heads", _LEDGER_HEADS))
    try:
        # Read-only: never create an empty file where one just disappeared.
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True,
                                    timeout=30)) as old:
            return {table: old.execute(query).fetchall() for table, query in queries}
    except sqlite3.Error as exc:
        raise ConfigError(
            f"cannot read the old state file {path} ({exc}); promoter will not start without "
            "its rows, which would re-run or forget promotions",
            hint="stop every promoter process; repair the file (sqlite3 .recover) or, if its "
                 f"contents may be lost, move it out of {path.parent}; then start again") from None


def _insert(conn: Connection, rows: dict[str, dict[str, Rows]], heads: Rows) -> None:
    for name in OLD_FILES:
        for _, table, columns in COPIES[name] if name in rows else ():
            marks = ", ".join("?" * len(columns.split(",")))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608
                             rows[name][table])
    # The ledger kept its own copy of the pushed head; one record remains. A head the GitLab
    # push record already has wins; the others were the local provider's pushes.
    for name, env, iid, sha, version in heads:
        branch = branch_for(name, env)
        if conn.execute("SELECT 1 FROM pushed_heads WHERE branch = ? AND iid = ?",
                        (branch, iid)).fetchone() is None:
            conn.execute("INSERT INTO pushed_heads (project, iid, branch, sha, version, "
                         "recorded_at) VALUES (?, ?, ?, ?, ?, 0)",
                         (LOCAL_PROJECT_ID, iid, branch, sha, version))
    conn.execute("INSERT INTO state_meta VALUES (?, ?)",
                 (MARKER, ", ".join(sorted(rows))))


def _move_away(files: list[Path]) -> None:
    """Move the imported files (with their -wal/-shm) to legacy/, never overwriting one."""
    target = files[0].parent / LEGACY_DIR
    target.mkdir(mode=0o700, exist_ok=True)
    for path in files:
        for suffix in ("", "-wal", "-shm"):
            source = path.with_name(path.name + suffix)
            if not source.exists():
                continue
            destination = target / source.name
            counter = 1
            while destination.exists():
                destination = target / f"{source.name}.{counter}"
                counter += 1
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                source.rename(destination)
