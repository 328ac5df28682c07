"""`promoter gitops init|images`: the GitOps repository's scaffolding, and the CI gate's helper."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.errors import UsageError

INIT_HELP = """Write (--out DIR) or propose as one merge request (--propose) the GitOps
repository's scaffolding, from promoter.yaml: the Argo CD AppProjects (one per team of
policy.teams, <argocd.project>-<team>, admitting its namespaces and the kinds promoter renders)
and the ApplicationSet (argocd.repo_url, each environment's cluster_selector and
allowed_regions; each Application in the project of its overlay's team), the Argo CD
notifications that call `promoter serve` back, the Sigstore policy-controller ClusterImagePolicy
and Kyverno ClusterPolicy with image.verification_key and the image.repository globs, a
CODEOWNERS skeleton and the repository's .gitlab-ci.yml gate.

Each file holds one managed block; re-running replaces only that block, so edits outside it
survive. A file that exists without the block is left alone and listed as skipped.
"""
INIT_HELP = "\n\n".join(" ".join(part.split()) for part in INIT_HELP.split("\n\n"))

app = typer.Typer(help="The GitOps repository promoter writes to.", no_args_is_help=True)


@app.command(help=INIT_HELP)
def init(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", file_okay=False,
                                             help="write into this directory")] = None,
    propose: Annotated[bool, typer.Option("--propose",
                                          help="open one MR with the configured provider")]
    = False,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.gitops import scaffold

    if (out is None) == (not propose):
        raise UsageError("give exactly one of --out DIR or --propose")
    settings = state(ctx).settings()
    result = None
    if out is not None:
        planned = scaffold.write(settings, out)
    else:
        from promoter.service import composition

        planned, result = scaffold.propose(settings, composition.provider(settings))
    if output == "json":
        emit_json({"written": sorted(planned.files), "unchanged": planned.unchanged,
                   "skipped": planned.skipped,
                   "mr_iid": result.mr_iid if result else None,
                   "mr_url": result.mr_url if result else None})
        return
    for path in sorted(planned.files):
        typer.echo(f"{'proposed' if propose else 'wrote'}  {path}")
    for path in planned.unchanged:
        typer.echo(f"unchanged  {path}")
    for path in planned.skipped:
        typer.echo(f"skipped  {path} (exists without promoter's managed block)")
    if result is not None:
        typer.echo(f"merge request: {result.mr_url or result.mr_iid} ({result.outcome.value})")


IMAGES_HELP = """Print, one per line, every image reference the CI gate must verify: what
the built overlays under DIR would pull (containers, initContainers and ephemeralContainers of
any pod template, KServe predictor/transformer and ServingRuntime containers, `oci://`
storageUri modelcars, image volumes' `reference`), each pinned by digest. Every reference must
be pinned (REPOSITORY@sha256:<64 hex>): an unpinned one, a storage URI of another scheme
(s3://, https://: model files no signature covers), or an overlay that does not build, exits 1
naming the overlay, the object, the field and the reference. Server images pinned in
promoter.yaml's runtime_images (--config or PROMOTER_CONFIG) are exempt from verification at
exactly that digest (their vendors sign them), and listed on stderr.
"""
IMAGES_HELP = "\n\n".join(" ".join(part.split()) for part in IMAGES_HELP.split("\n\n"))


@app.command(help=IMAGES_HELP)
def images(ctx: typer.Context,
           directory: Annotated[Path, typer.Argument(exists=True, file_okay=False)]) -> None:
    from promoter.errors import UserError
    from promoter.gitops.images import gate_images
    from promoter.service import composition

    settings = state(ctx).settings()
    gate = gate_images(directory, composition.manifest_checker().build,
                       settings.runtime_images.values())
    for reference in gate.exempt:
        typer.echo(f"not verified (runtime_images pins it): {reference}", err=True)
    if gate.problems:
        for problem in gate.problems:
            typer.echo(problem, err=True)
        raise UserError(f"the image gate refuses {directory}: {len(gate.problems)} problem(s) "
                        "above", hint="pin every image reference by digest, serve model files "
                                      "from signed modelcars (oci://), and make every overlay "
                                      "build (`promoter validate`)")
    for reference in gate.verify:
        typer.echo(reference)


POLICY_HELP = """Check what each overlay under the given directories declares (GPU type and count,
regions, replicas, team, namespace) against promoter.yaml's placement policy: allowed GPU types
and regions of the environment named by the overlay directory, policy.teams, and the team GPU
quota, which is judged on the sum over every overlay under the directories (give the whole
manifests tree, as CI does). With --changed-from REV only the overlays the commits since REV can
affect are judged: every overlay whose kustomizations (followed through every one they reach)
name a changed path or a directory holding it, in any model's directory; and, as before, an
overlay's own files (at any depth) select it, a model's other files (its base/) select all its
overlays, any other file under the directories selects every overlay.
Exit 0 when every judged overlay is allowed, 4 when one is denied. Rules on MLflow facts
(required tags, metric gates) are not checked: the manifests do not carry them.
"""


@app.command(help=POLICY_HELP)
def policy(
    ctx: typer.Context,
    directories: Annotated[list[Path], typer.Argument(exists=True, file_okay=False)],
    changed_from: Annotated[str | None, typer.Option(
        "--changed-from", metavar="REV",
        help="judge only the overlays the commits since REV can affect")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.errors import EXIT_POLICY
    from promoter.gitops.policy import changed_overlays, check_tree
    from promoter.service import composition

    selected = None if changed_from is None else changed_overlays(
        directories, composition.changed_files(changed_from))
    verdicts = check_tree(state(ctx).settings(), directories,
                          composition.manifest_checker().build, selected)
    if output == "json":
        emit_json([{"overlay": str(v.overlay), "env": v.env, "allowed": v.decision.allowed,
                    "reasons": v.decision.reasons} for v in verdicts])
    else:
        if not verdicts:
            typer.echo("no overlay to judge" + (f": nothing since {changed_from} affects one"
                                                if changed_from else ""))
        for verdict in verdicts:
            typer.echo(f"{'ok  ' if verdict.decision.allowed else 'DENY'}  {verdict.overlay}")
            for result in verdict.decision.results:
                if not result.passed:
                    typer.echo(f"      {result.rule}: {result.detail}")
    if not all(v.decision.allowed for v in verdicts):
        raise typer.Exit(EXIT_POLICY)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="gitops")
