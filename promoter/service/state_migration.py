"""``promoter state migrate --to postgresql://…``: the SQLite state of the state directory,
audit trail included, copied into a PostgreSQL database (promoter.state.copy)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from promoter.core.audit_chain import settled_head
from promoter.errors import UserError
from promoter.service.audit import AuditTrail
from promoter.service.audit_table import TABLES as AUDIT_TABLES
from promoter.service.audit_table import TableChain
from promoter.state import copy
from promoter.state.db import DB_FILENAME, Connection, StateDB
from promoter.state.legacy import OLD_FILES

if TYPE_CHECKING:
    from promoter.settings import Settings


def migrate_to_postgresql(settings: Settings, url: str, *, replace: bool) -> dict[str, int]:
    """Copy ``settings.state_dir``'s state.db and audit trail into ``url``; returns the
    number of rows per table (and ``audit_entries``)."""
    from promoter.service.composition import state_db
    from promoter.service.composition.state import check_url
    from promoter.state_settings import refuse_url_password

    if not re.match(r"^postgres(ql)?://", url):
        # Only a URL's scheme is quoted: the rest may hold a password (a libpq "key=value"
        # string, "user:password@host").
        scheme = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url)
        raise UserError("--to must be a postgresql:// URL, not "
                        + (f"a {scheme.group()} one" if scheme else
                           "a key=value string or other text (not shown: it may hold a "
                           "password)"),
                        hint="postgresql://USER@HOST:PORT/DATABASE; the password comes from "
                             "PROMOTER_STATE_PASSWORD or PROMOTER_STATE_PASSWORD_FILE")
    refuse_url_password({"state": {"url": url}})
    check_url(url, settings.state.tls_options())  # a typo must not read as an outage (exit 3)
    # The old six-file layout is SQLite state too: opening it imports it into state.db, as
    # every other command does, rather than leaving the new database without its jobs.
    if not any((settings.state_dir / name).exists() for name in (DB_FILENAME, *OLD_FILES)):
        raise UserError(f"there is no SQLite state to copy in {settings.state_dir}",
                        hint="set PROMOTER_STATE_DIR (or state_dir) to the directory that "
                             f"holds {DB_FILENAME} (or promoter.db and the other files of "
                             "the old layout)")
    source = StateDB.open(settings.state_dir)
    trail = AuditTrail(settings.state_dir)  # the files: the source has no state.url
    # One snapshot: a process still appending must not leave the head older than the lines.
    # The database moves its head in each entry's own transaction and keeps no pending entry:
    # an entry a crash left unconfirmed in the files is copied as confirmed.
    lines, head = trail.snapshot(lambda snapshot: (list(snapshot.lines()), settled_head(
        snapshot.lines(), snapshot.head, snapshot.pending)))
    _refuse_unstorable(lines, trail.location)
    target_settings = settings.model_copy(
        update={"state": settings.state.model_copy(update={"url": url})})
    target = state_db(target_settings)
    try:
        tables = copy.storable_rows(copy.read_all(source))

        def audit(conn: Connection) -> dict[str, int]:
            return {"audit_entries": TableChain.import_lines(conn, lines, head)}

        return copy.write_all(target, tables, replace=replace, also=audit,
                              extra_tables=AUDIT_TABLES)
    finally:
        source.close()
        target.close()


def _refuse_unstorable(lines: list[str], location: str) -> None:
    """A NUL in an audit line (JSON escapes it: an edit, or the zeros a crash can leave at a
    file's end) cannot go into PostgreSQL, and escaping it would change the bytes the chain's
    hashes cover, so it is named instead."""
    for number, line in enumerate(lines, start=1):
        if "\x00" in line:
            raise UserError(f"{location}:{number} holds a NUL byte, which PostgreSQL cannot "
                            "store; the audit_entries row would not be the line as written",
                            hint="promoter never writes one: the line was edited, or a "
                                 "crash left zeros at the trail's end (`promoter audit "
                                 "verify` says which); restore or remove it, then migrate")
