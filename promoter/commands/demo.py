"""`promoter demo`: the whole promotion loop on embedded defaults, on this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.errors import UsageError, UserError


def demo(
    ctx: typer.Context,
    stop: Annotated[bool, typer.Option("--stop", help="stop the demo's background services")
                    ] = False,
    reset: Annotated[bool, typer.Option(
        "--reset", help="stop the services and remove the demo's directory (MLflow, registry, "
                   "keys, configuration) to start over")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="with --reset: do not ask")] = False,
    output: str = OUTPUT_OPTION,
) -> None:
    """Run the whole promotion loop on embedded defaults, on this machine.

    Starts MLflow (sqlite), an OCI registry (docker-registry if installed, else an OCI
    layout), a local git remote and `promoter serve`; logs a small model, sets its
    `production` alias and shows the job, the signed image and the merge request with its diff.

    Everything lives under PROMOTER_STATE_DIR/demo and is reused by the next run (the services
    keep their ports across restarts); the services keep running so `promoter mr
    approve|merge` can finish the loop. `--stop` ends them; `--reset` also removes the demo's
    state so the next run starts over.
    """
    from promoter.demo import environment

    state_dir = state(ctx).settings().state_dir
    if stop and reset:
        raise UsageError("--stop and --reset do not go together", hint="--reset also stops")
    if yes and not reset:  # alone it would run the whole demo, confirming nothing
        raise UsageError("--yes confirms --reset; give --reset --yes")
    if stop:
        stopped = environment.stop(state_dir)
        typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return
    if reset:
        _reset(state_dir, yes)
        return
    from promoter.demo import flow  # imports mlflow: only when the demo really runs
    from promoter.progress import Progress

    progress = Progress.for_output(output)
    say: flow.Say = _quiet if output == "json" else progress.line
    report = flow.run(state_dir, say, progress)
    if output == "json":
        emit_json({"config": str(report.config), "model": report.model,
                   "version": report.version, "job": report.job, "mr": report.mr,
                   "image": report.image, "signature": report.signature, "diff": report.diff,
                   "reused": report.reused, "moved": report.notes})
        return
    job, result = report.job, report.job.get("result") or {}
    typer.echo(f"\njob {job['id']}: {job['state']} after {job['attempts']} attempt(s)"
               + (f" — {job['reason']}" if job.get("reason") else ""))
    if result:
        typer.echo(f"  outcome {result.get('outcome')}, MLflow status "
                   f"promoter.production.status={result.get('status')}")
    typer.echo(f"image:     {report.image or 'not built'}")
    if report.image:
        typer.echo("           (demo image without a base: it holds the model and its "
                   "dependencies but no Python, so it is not runnable as a container)")
    typer.echo(f"signature: {report.signature or 'none'}")
    if report.mr:
        mr = report.mr
        typer.echo(f"merge request !{mr['iid']}: {mr['title']} [{mr['state']}]")
        typer.echo(f"  branch {mr['source_branch']} → {mr['target_branch']}, "
                   f"head {str(mr['head_sha'])[:12]}, approvals required "
                   f"{mr['approvals_required']}")
        typer.echo("\n" + report.diff)
        config = report.config
        if mr["state"] != "opened":   # a re-run after the merge: nothing is left to finish
            typer.echo(f"merge request !{mr['iid']} is {mr['state']}: the loop is finished. "
                       "Stop the services with `promoter demo --stop`.")
            return
        typer.echo("finish the loop:")
        typer.echo(f"  promoter --config {config} mr approve {mr['iid']}")
        typer.echo(f"  promoter --config {config} mr merge {mr['iid']}")
        typer.echo(f"then MLflow shows promoter.production.status=merged on version "
                   f"{report.version}. Stop the services with `promoter demo --stop`.")


def _quiet(_text: str) -> None:
    return None


def _reset(state_dir: Path, yes: bool) -> None:
    from promoter.demo import environment

    directory = environment.demo_directory(state_dir)
    if not directory.exists():
        typer.echo(f"nothing to reset: {directory} does not exist")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"--reset removes {directory} and needs a confirmation",
                            hint="run it in a terminal, or add --yes")
        typer.confirm(f"stop the demo's services and remove {directory} (its MLflow and "
                      "models, registry and images, keys, configuration)?", abort=True)
    stopped, _ = environment.reset(state_dir)
    typer.echo(("stopped: " + ", ".join(stopped) + "; " if stopped else "")
               + f"removed {directory}. `promoter demo` starts over.")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
