"""`promoter state migrate`: move promoter's state from SQLite into PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state

state_app = typer.Typer(help="promoter's own state (queue, ledger, audit trail, …).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(state_app, name="state")


@state_app.command(help="Copy the SQLite state of the state directory (state.db and the audit "
                        "trail) into an empty PostgreSQL database, row for row: job ids, MR "
                        "iids and audit hashes stay as they are, so `promoter audit verify` "
                        "still passes. Stop every promoter process first; afterwards set "
                        "state.url (or PROMOTER_STATE_URL) to the same URL. The password comes "
                        "from PROMOTER_STATE_PASSWORD or PROMOTER_STATE_PASSWORD_FILE.")
def migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option(
        "--to", metavar="URL", help="postgresql://USER@HOST:PORT/DATABASE[?sslmode=…], "
                                    "without a password")],
    replace: Annotated[bool, typer.Option(
        "--replace", help="delete whatever state the target already holds first (without "
                          "it, a target that holds any is refused)")] = False,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.service.composition.state import redact_url
    from promoter.service.state_migration import migrate_to_postgresql

    counts = migrate_to_postgresql(state(ctx).settings(), to, replace=replace)
    if output == "json":
        emit_json({"to": redact_url(to), "rows": counts})
        return
    typer.echo(f"copied into {redact_url(to)}:")
    for table, count in counts.items():
        typer.echo(f"  {table:<20} {count}")
