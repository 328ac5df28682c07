"""`promoter gc`: propose removing deployments nothing needs any more, as one merge request."""

from __future__ import annotations

from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state

HELP = """Propose, as one merge request, removing what nothing needs any more.

An overlay goes when its registered model or version no longer exists in MLflow, when no
alias or stage points the environment at the model, or when it sat idle in an
idle-collected environment (gc.idle_environments, default staging) past gc.staging_ttl_seconds:
its version live unchanged that long, the alias (or stage) still naming that version, and no
promotion into that environment under way (claimed, or its MR open).
A base goes with its last overlay, or alone when nothing is left under its overlays/, and
only while no promotion of its model into another environment is under way (one that starts
meanwhile closes the gc MR, or gc proposes again without that base). Directories promoter
did not write are never touched.
An open gc MR is rebuilt to hold exactly the current plan, and closed (withdrawn) when nothing
is to go any more. --dry-run prints the plan and changes nothing.
"""


def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan only")] = False,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.garbage import collect
    from promoter.service import composition

    settings = state(ctx).settings()
    registry = composition.registry(settings)
    plan = collect(settings, registry, composition.provider(settings), dry_run=dry_run)
    result = plan.result
    if output == "json":
        emit_json({"removals": [{"path": r.prefix, "reason": r.reason} for r in plan.removals],
                   "mr_iid": result.mr_iid if result else None,
                   "mr_url": result.mr_url if result else None,
                   "withdrawn_mr_iid": plan.withdrawn.iid if plan.withdrawn else None})
        return
    if not plan.removals:
        typer.echo("nothing to collect")
        if plan.withdrawn is not None:
            typer.echo(f"closed the earlier gc merge request {plan.withdrawn.url}: nothing "
                       "it removes may go any more")
        return
    for removal in plan.removals:
        typer.echo(f"remove {removal.prefix}  ({removal.reason})")
    if result is not None:
        typer.echo(f"merge request: {result.mr_url or result.mr_iid} ({result.outcome.value})")
    else:
        typer.echo("dry run: nothing proposed")


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(gc)
