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
state database's ledger, if one exists. When the branch cannot be read (no token, offline),
the command says those checks were not made and answers the rest (a team GPU quota, a rule
of the verdict, is counted on that branch too: unreadable, the command fails). Time-based
gates (staging first) read the audit trail. Nothing is written: not the state directory, not
any repository.
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
    from promoter.policy_check import BRANCH_CHECKS, Subject, check_policy

    if intent is None and model is None:
        raise UsageError("give --intent FILE, or --model M --version N, or both")
    if (model is None) != (version is None):
        raise UsageError("--model and --version go together")
    settings = state(ctx).settings()
    checked = check_policy(settings, Subject(env=env, intent_file=intent, model=model,
                                             version=version))
    decision = checked.decision
    not_checked = None if checked.branch_unread is None else {
        "checks": list(BRANCH_CHECKS), "reason": f"the target branch could not be read: "
                                                 f"{checked.branch_unread}"}
    if output == "json":
        emit_json({"allowed": decision.allowed, "reasons": decision.reasons,
                   "results": [{"rule": r.rule, "passed": r.passed, "detail": r.detail}
                               for r in decision.results],
                   "not_checked": not_checked})
    else:
        for result in decision.results:
            typer.echo(f"{'pass' if result.passed else 'DENY'}  {result.rule}: {result.detail}")
        if not_checked is not None:
            typer.echo(f"NOT CHECKED  {'; '.join(not_checked['checks'])} "
                       f"({not_checked['reason']})")
        typer.echo("allowed" if decision.allowed else
                   f"denied: {len(decision.reasons)} rule(s) failed")
    if not decision.allowed:
        raise typer.Exit(EXIT_POLICY)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="policy")
