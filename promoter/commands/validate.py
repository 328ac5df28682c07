"""`promoter validate DIR`: kustomize-build every overlay and schema-check every resource."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json
from promoter.errors import UserError

HELP = """Kustomize-build and schema-check every overlay under DIR.

Builds every <model>/overlays/<env> under DIR with real Kustomize and validates each resource
against the Kubernetes schemas (and the CRD schemas promoter emits), and each
InferenceService against KServe's 63-character host-name label. Exits 1 naming the overlay,
the resource and the error on any failure."""


def validate(
    directory: Annotated[Path, typer.Argument(help="manifests tree, e.g. manifests/")],
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.service import composition
    from promoter.validation import validate_tree

    reports = validate_tree(directory, composition.manifest_checker())
    failed = [report for report in reports if not report.ok]
    if output == "json":
        emit_json([{"overlay": str(r.overlay), "resources": r.resources, "problems": r.problems}
                   for r in reports])
    else:
        for report in reports:
            status = "ok  " if report.ok else "FAIL"
            typer.echo(f"{status} {report.overlay} ({report.resources} resources)")
            for problem in report.problems:
                typer.echo(f"     {report.overlay}: {problem}")
    if failed:
        raise UserError(f"{len(failed)} of {len(reports)} overlays failed validation")


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(validate)
