"""`promoter render`: preview (--dry-run) or write (--out) a model's Kustomize tree."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, check_version, emit_json, state
from promoter.core import keda_overlay
from promoter.errors import UsageError

if TYPE_CHECKING:  # jinja2 loads only when a command renders, not for every `promoter …`
    from promoter.core.render import ImagePin

HELP = """Render the Kustomize base and one environment's overlay for a model.

The intent comes from a ModelDeployment file (--intent) or from MLflow (MODEL --version N:
deploy.* tags or a logged modeldeployment.yaml). --dry-run prints every file with its path and
writes nothing; --out DIR writes DIR/<name>/base and DIR/<name>/overlays/<env>.
--modelcar REPO@sha256:… (modelcar runtimes) and --image REPO@sha256:… (the deployment
runtime) pin the signed artifact the overlay runs, as a promotion does (the other one is a usage
error); without it the tree is a preview a cluster cannot run, and a warning says so. An accepted
`promoter forecast` ScaledObject already in DIR's overlay is kept, as a promotion keeps it.
"""

def _pin(option: str, value: str | None) -> ImagePin | None:
    if value is None:
        return None
    from promoter.core.image_refs import split_pinned
    from promoter.core.render import ImagePin

    pinned = split_pinned(value)
    if pinned is None:
        raise UsageError(f"{option} must be REPOSITORY@sha256:<64 hex digits>, not {value!r}")
    return ImagePin(*pinned)


def render(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="environment from promoter.yaml")],
    model: Annotated[str | None, typer.Argument(help="MLflow registered model name")] = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="model version",
                                                callback=check_version)] = None,
    intent: Annotated[Path | None, typer.Option("--intent", "-i", dir_okay=False,
                                                help="ModelDeployment YAML file")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print, write nothing")] = False,
    out: Annotated[Path | None, typer.Option("--out", file_okay=False,
                                             help="write the tree under this directory")] = None,
    modelcar: Annotated[str | None, typer.Option(
        "--modelcar", help="signed modelcar REPO@sha256:… (kserve, vllm, triton)")] = None,
    image: Annotated[str | None, typer.Option(
        "--image", help="signed pyfunc image REPO@sha256:… (deployment runtime)")] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter import rendering

    if dry_run == (out is not None):
        raise UsageError("choose exactly one of --dry-run and --out DIR")
    if (intent is None) == (model is None):
        raise UsageError("give either --intent FILE or MODEL --version N")
    if intent is not None and version is not None:
        # The file names its version (spec.model.version): a --version beside it was ignored.
        raise UsageError("--version goes with MODEL; with --intent FILE the version is the "
                         "file's spec.model.version")
    settings = state(ctx).settings()
    if intent is not None:
        document = rendering.load_intent_file(intent)
        request = rendering.build_request(settings, document, env, origin=str(intent))
    else:
        if version is None:
            raise UsageError("MODEL needs --version N")
        from promoter.model_source import request_from_registry
        from promoter.service import composition

        request = request_from_registry(settings, model or "", version, env,
                                        composition.registry(settings))
    modelcar_pin, image_pin = _pin("--modelcar", modelcar), _pin("--image", image)
    request = dataclasses.replace(request, modelcar=modelcar_pin or request.modelcar,
                                  image=image_pin or request.image)
    if out is not None:
        # An accepted `promoter forecast` ScaledObject in the tree stays, as in a promotion.
        accepted = (out / request.deployment.name / "overlays" / env
                    / keda_overlay.SCALED_OBJECT_FILE)
        if accepted.is_file():
            request = dataclasses.replace(request,
                                          accepted_scaling=accepted.read_text(encoding="utf-8"))
    renderer = rendering.renderer(settings)
    from promoter.core.runtimes import misplaced_pin, unpinned_artifact

    descriptor = renderer.check(request)
    if model is not None and version is not None:
        from promoter.core import vllm_fit
        from promoter.service import composition

        # The version's config.json is in MLflow (the same adapter, one per process): refuse
        # what vLLM would refuse at start-up, as a promotion does.
        vllm_fit.refuse_misfit(composition.registry(settings), request.deployment, descriptor,
                               model, version, env)
    misplaced = misplaced_pin(descriptor, modelcar_given=modelcar is not None,
                              image_given=image is not None)
    if misplaced is not None:
        raise UsageError(misplaced)
    files = renderer.render(request)
    unpinned = unpinned_artifact(
        descriptor, image_pinned=bool(request.image and request.image.digest),
        modelcar_pinned=bool(request.modelcar and request.modelcar.digest))
    warnings = [unpinned] if unpinned else []
    if out is not None:
        written = rendering.write_tree(out, files)
        if output == "json":
            emit_json({"written": [str(path) for path in written], "warnings": warnings})
        else:
            for path in written:
                typer.echo(f"wrote {path}")
    elif output == "json":
        emit_json({"files": files, "warnings": warnings})
    else:
        for relative, text in files.items():
            typer.echo(f"--- # {relative}")
            typer.echo(text, nl=False)
    for warning in warnings if output != "json" else []:
        typer.echo(f"warning: {warning}", err=True)  # after the tree: last on the screen


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(render)
