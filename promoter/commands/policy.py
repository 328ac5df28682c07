"""`promoter policy check`: the pipeline's policy verdict, locally, before anything is promoted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.errors import EXIT_POLICY, UsageError

HELP = """Check a deployment against promoter.yaml's policy: the same verdict the pipeline gives.

Every rule and gate is evaluated and printed. Exit 0 when allowed, 4 when denied, 1 for bad
input and for what the pipeline marks invalid. --intent FILE checks an intent file; --model M
--version N reads the version's tags, run metrics and intent from MLflow (with --intent too,
the file's intent replaces the version's), and checks that vLLM can start it.

Besides the rules, the pipeline's own refusals are checked: a deployment name another model
owns, and a runtime switch under other environments' overlays. They read the target branch
(GitLab's API with PROMOTER_GITLAB_TOKEN, or a temporary fetch of the local remote) and the
state database's ledger, if one exists. A team GPU quota counts the team's other deployments
on that branch and its open proposals in the ledger. Whatever of these cannot be read (no
token, offline, a PostgreSQL state whose schema is missing or older than this promoter's),
the command prints a NOT CHECKED line naming the checks not made and why (not_checked in
--output json), and answers the rest with the same exit codes (a quota that this deployment
alone exceeds is still denied).
Time-based gates (staging first) read the audit trail. Nothing is written: not the state
directory, not the state database (PostgreSQL is read in READ ONLY transactions and never
migrated), not any repository.
"""

app = typer.Typer(help="Policy: check what the pipeline would allow.", no_args_is_help=True)


@app.command(help=HELP)
def check(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="environment from promoter.yaml")],
    intent: Annotated[Path | None, typer.Option("--intent", "-i", dir_okay=False,
                                                help="ModelDeployment YAML file")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m",
                                              help="MLflow registered model name")] = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="model version")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.commands import _not_checked
    from promoter.policy_check import Subject, check_policy

    if intent is None and model is None:
        raise UsageError("give --intent FILE, or --model M --version N, or both")
    if (model is None) != (version is None):
        raise UsageError("--model and --version go together")
    settings = state(ctx).settings()
    checked = check_policy(settings, Subject(env=env, intent_file=intent, model=model,
                                             version=version))
    decision = checked.decision
    if output == "json":
        emit_json({"allowed": decision.allowed, "reasons": decision.reasons,
                   "results": [{"rule": r.rule, "passed": r.passed, "detail": r.detail}
                               for r in decision.results],
                   "not_checked": _not_checked.as_json(checked)})
    else:
        for result in decision.results:
            typer.echo(f"{'pass' if result.passed else 'DENY'}  {result.rule}: {result.detail}")
        _not_checked.echo(checked)
        typer.echo("allowed" if decision.allowed else
                   f"denied: {len(decision.reasons)} rule(s) failed")
    if not decision.allowed:
        raise typer.Exit(EXIT_POLICY)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="policy")
