"""`promoter mr list|show|approve|merge|close`: play the reviewer for the local git provider.

With no GitLab configured, promoter records merge requests in the state directory and pushes
branches to the configured git remote; these commands review them. ``merge`` makes a real
merge commit on the remote's target branch (approvals required by the environment first).
"""

from __future__ import annotations

import dataclasses
import getpass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, one_of, state
from promoter.core.mr_text import plain
from promoter.errors import ConfigError, PromoterError

if TYPE_CHECKING:
    from promoter.core.mr_events import ForgeEvent
    from promoter.ports.git import MergeRequest
    from promoter.ports.review import MergeRequestReview

mr_app = typer.Typer(help="Review merge requests of the local git provider.",
                     no_args_is_help=True)
MR_STATES = ("opened", "closed", "merged", "all")
# GitLab keeps MR numbers (iid) in a 4-byte integer column; a longer number is a typo, and
# the local provider's SQLite would fail on it with an overflow instead of a usage error.
MAX_MR_NUMBER = 2**31 - 1
MrNumber = Annotated[int, typer.Argument(help="MR number", min=1, max=MAX_MR_NUMBER)]
USER_OPTION = typer.Option("--user", "-u", help="who acts (default: your login name)")
SHA_OPTION = typer.Option("--sha", help="act only if the MR head is still this commit")


def register(app: typer.Typer) -> None:
    app.add_typer(mr_app, name="mr")


def _provider(ctx: typer.Context, output: str) -> MergeRequestReview:
    if output not in ("text", "json"):
        raise typer.BadParameter(f"--output must be text or json, not {output!r}")
    settings = state(ctx).settings()
    if settings.git.provider != "local":
        raise ConfigError("`promoter mr` drives the local git provider, but git.provider is "
                          f"{settings.git.provider!r}",
                          hint="review GitLab merge requests in GitLab itself")
    from promoter.service import composition

    registry = composition.registry(settings) if settings.mlflow.tracking_uri else None
    outcomes = composition.outcomes(settings, registry)

    def on_event(event: ForgeEvent) -> None:
        # The merge (or approval) has happened; an MLflow outage must not make it look failed.
        try:
            outcomes(event)
        except PromoterError as exc:
            typer.echo(f"warning: MLflow was not updated ({exc.message}); the audit trail "
                       "records the outcome", err=True)

    return composition.local_review(settings, on_event=on_event)


def _user(user: str | None) -> str:
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local-reviewer"


def as_dict(mr: MergeRequest) -> dict[str, Any]:
    data = dataclasses.asdict(mr)
    data["labels"], data["approved_by"] = list(mr.labels), list(mr.approved_by)
    return data


def _print(mr: MergeRequest, output: str, verb: str) -> None:
    if output == "json":
        emit_json(as_dict(mr))
    else:
        typer.echo(f"!{mr.iid} {verb}: {plain(mr.title)} [{mr.state}]")


@mr_app.command("list")
def list_mrs(
    ctx: typer.Context,
    mr_state: Annotated[str, typer.Option(
        "--state", "-s", help="opened, closed, merged or all",
        callback=one_of(*MR_STATES))] = "opened",
    output: str = OUTPUT_OPTION,
) -> None:
    """List merge requests, newest first."""
    found = _provider(ctx, output).list_mrs(mr_state)
    if output == "json":
        emit_json([as_dict(mr) for mr in found])
        return
    if not found:
        typer.echo(f"no {mr_state} merge requests" if mr_state != "all" else "no merge requests")
        return
    for mr in found:
        approvals = f"{len(mr.approved_by)}/{mr.approvals_required}"
        typer.echo(f"!{mr.iid:<4} {mr.state:<7} approvals {approvals:<5} {mr.source_branch}  "
                   f"{plain(mr.title)}")


@mr_app.command("show")
def show_mr(ctx: typer.Context, iid: MrNumber,
            output: str = OUTPUT_OPTION) -> None:
    """Show one merge request: state, head, approvals, description and bot notes."""
    provider = _provider(ctx, output)
    mr, notes = provider.get(iid), provider.notes(iid)
    if output == "json":
        emit_json({**as_dict(mr), "notes": notes})
        return
    typer.echo(f"!{mr.iid} {plain(mr.title)}\n"
               f"  state:      {mr.state}\n"
               f"  branch:     {mr.source_branch} → {mr.target_branch}\n"
               f"  head:       {mr.head_sha or '-'}\n"
               f"  version:    {mr.version or '-'}\n"
               f"  approvals:  {len(mr.approved_by)}/{mr.approvals_required} "
               f"{', '.join(mr.approved_by)}\n"
               f"  auto-merge: {'yes' if mr.auto_merge else 'no'}\n"
               f"  merged as:  {mr.merge_commit_sha or mr.squash_commit_sha or '-'}\n\n"
               f"{mr.description}")
    for note in notes:
        typer.echo(f"---\n{note}")


@mr_app.command("approve")
def approve_mr(ctx: typer.Context, iid: MrNumber,
               user: Annotated[str | None, USER_OPTION] = None,
               sha: Annotated[str | None, SHA_OPTION] = None,
               output: str = OUTPUT_OPTION) -> None:
    """Approve a merge request (auto-merge MRs merge once approvals are complete)."""
    _print(_provider(ctx, output).approve(iid, _user(user), sha=sha), output, "approved")


@mr_app.command("merge")
def merge_mr(ctx: typer.Context, iid: MrNumber,
             user: Annotated[str | None, USER_OPTION] = None,
             sha: Annotated[str | None, SHA_OPTION] = None,
             output: str = OUTPUT_OPTION) -> None:
    """Merge into the target branch of the remote (needs the required approvals)."""
    _print(_provider(ctx, output).merge(iid, _user(user), sha=sha), output, "merged")


@mr_app.command("close")
def close_mr(ctx: typer.Context, iid: MrNumber,
             user: Annotated[str | None, USER_OPTION] = None,
             output: str = OUTPUT_OPTION) -> None:
    """Close without merging; promoter will not reopen it for the same version."""
    _print(_provider(ctx, output).close(iid, _user(user)), output, "closed")
