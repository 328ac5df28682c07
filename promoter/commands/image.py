"""`promoter image build|sign|verify`: the serving image, without a Docker daemon."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.commands.keys import cosign_password
from promoter.errors import UsageError, UserError

if TYPE_CHECKING:
    from promoter.ports.image import BuiltImage
    from promoter.settings import Settings

image_app = typer.Typer(help="Build, sign and verify the model serving image.",
                        no_args_is_help=True)
KEY_OPTION = typer.Option("--key", "-k", dir_okay=False, help="cosign key file")
FORMAT_OPTION = typer.Option("--format", "-f", help="bundle and/or legacy (default: settings)")


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {pair!r} must look like key=value")
        labels[key] = value
    return labels


def _check_tag(value: str | None) -> str | None:
    """--tag is checked before any work starts (the builder checks it again for other callers)."""
    from promoter.image.reference import check_tag

    return check_tag(value, "--tag") if value is not None else None


# Both builds (serving image, modelcar) write to a layout or push, and take extra labels.
OciLayoutOption = Annotated[Path | None, typer.Option(
    "--oci-layout", file_okay=False, help="write an OCI image layout here, push nothing")]
LabelOption = Annotated[list[str] | None, typer.Option("--label", "-l", help="extra key=value")]


@image_app.command("build")
def build(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="models:/NAME/VERSION, runs:/ID/PATH or a dir")],
    repository: Annotated[str | None, typer.Option(
        "--repository", "-r", help="REGISTRY/REPO to push to (default: image.repository)")
    ] = None,
    base: Annotated[str | None, typer.Option("--base", help="base image (default: image.base)")
                    ] = None,
    oci_layout: OciLayoutOption = None,
    tag: Annotated[str | None, typer.Option("--tag", help="tag (default: v<model version>)",
                                            callback=_check_tag)] = None,
    label: LabelOption = None,
    output: str = OUTPUT_OPTION,
) -> None:
    """Build the serving image for MODEL and push it; prints REPO@sha256:…"""
    from promoter.image.builder import BuildProgress
    from promoter.progress import Progress
    from promoter.service import composition

    _one_destination(repository, oci_layout)
    settings = state(ctx).settings()
    with Progress.for_output(output).task(f"building the image for {model}") as task:
        built = composition.build_image(settings, model, repository, base=base,
                                        labels=_labels(label or []), tag=tag, layout=oci_layout,
                                        progress=BuildProgress(task.status, task.transfer))
    _report(built, oci_layout, output)


@image_app.command("modelcar")
def modelcar(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="models:/NAME/VERSION, runs:/ID/PATH or a dir")],
    runtime: Annotated[str, typer.Option(
        "--runtime", help="the runtime whose layout goes under /models (its descriptor's "
                          "modelcarLayout): kserve (MLflow dir), vllm (Hugging Face files), "
                          "triton (model repository)")] = "kserve",
    repository: Annotated[str | None, typer.Option(
        "--repository", "-r", help="REGISTRY/REPO (default: image.modelcar_repository, "
                                   "else image.repository)")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="model name (triton's directory, {name} in the repository)")] = None,
    model_format: Annotated[str, typer.Option(
        "--model-format", help="triton: onnx or tensorrt")] = "onnx",
    max_batch_size: Annotated[int, typer.Option(
        "--max-batch-size", min=0, max=1_000_000,   # as spec.serving.maxBatchSize
        help="triton: max_batch_size in config.pbtxt")] = 0,
    oci_layout: OciLayoutOption = None,
    label: LabelOption = None,
    output: str = OUTPUT_OPTION,
) -> None:
    """Build a modelcar (the model's files under /models) and push it; prints REPO@sha256:…"""
    from promoter.errors import UsageError
    from promoter.ports.image import ModelcarRequest
    from promoter.progress import Progress
    from promoter.service import composition

    _one_destination(repository, oci_layout)
    settings = state(ctx).settings()
    if name is None:
        name = _default_name(model)   # valid by construction: --name was not given
    else:
        _check_name(name)
    target = repository or settings.image.modelcar_repository or settings.image.repository
    if not target and oci_layout is None:
        raise UsageError("say where the modelcar goes: --repository REGISTRY/REPO, "
                         "image.modelcar_repository in promoter.yaml, or --oci-layout DIR")
    target = (target or "localhost/promoter-modelcar").replace("{name}", name)
    request = ModelcarRequest(layout=_modelcar_layout(settings, runtime), name=name,
                              model_format=model_format,
                              max_batch_size=max_batch_size)
    with Progress.for_output(output).task(f"building the modelcar for {model}"):
        built = composition.build_modelcar(settings, model, target, request,
                                           labels=_labels(label or []), layout=oci_layout)
    _report(built, oci_layout, output)


def _check_name(name: str) -> None:
    """The name becomes Triton's directory under /models and ``{name}`` in the repository:
    a deployment name, so it stays one path segment (``../..`` wrote members outside /models)."""
    from promoter.core.naming import name_problem
    from promoter.errors import UsageError

    problem = name_problem(name)
    if problem is not None:
        raise UsageError(f"--name {name[:100]!r} {problem}")


def _one_destination(repository: str | None, oci_layout: Path | None) -> None:
    """A build either pushes or writes a layout: given both, it wrote the layout only, and
    exited 0 as if it had pushed."""
    if repository is not None and oci_layout is not None:
        from promoter.errors import UsageError

        raise UsageError("choose --repository (push) or --oci-layout (write a layout and push "
                         "nothing), not both")


def _report(built: BuiltImage, oci_layout: Path | None, output: str) -> None:
    """The built image's reference (its notes on stderr), or every fact with --output json."""
    reference = f"oci:{oci_layout}@{built.digest}" if oci_layout else built.reference
    if output == "json":
        emit_json({"reference": reference, "digest": built.digest, "size": built.size,
                   "layers": built.layers, "bytes_uploaded": built.bytes_uploaded,
                   "tag": built.tag, "notes": built.notes})
        return
    for note in built.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(reference)


def _default_name(model: str) -> str:
    """models:/NAME/VERSION or models:/NAME@ALIAS → the deployment name of NAME (the
    pipeline's rule, core.naming.derive_name); a directory → that of its name. Where that
    rule gives no valid name (``Fraud Predictor`` ends in KServe's ``-predictor``), the name
    the pipeline suggests for it (core.naming.suggest_name: ``fraud-predictor-model``), so
    that a default never fails the --name check the user did not ask for."""
    from promoter.core.naming import derive_name, suggest_name

    text = model.split(":/", 1)[1].strip("/").split("/")[0].split("@")[0] if ":/" in model \
        else Path(model).resolve().name
    return suggest_name(text) if derive_name(text) else "model"


@image_app.command("sign")
def sign(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="REPO@sha256:… to sign")],
    key: Annotated[Path | None, KEY_OPTION] = None,
    keyless: Annotated[bool, typer.Option(
        "--keyless", help="Sigstore keyless (Fulcio/Rekor) with SIGSTORE_ID_TOKEN")] = False,
    signature_format: Annotated[list[str] | None, FORMAT_OPTION] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    """Sign an image digest with a cosign key (password: COSIGN_PASSWORD)."""
    from promoter.service import composition

    settings = state(ctx).settings()
    if keyless:
        info = composition.sign_keyless(settings, reference)
        if output == "json":
            emit_json(info.__dict__)
        else:
            typer.echo(f"signed {info.reference} keyless (bundle, certificate from Fulcio)")
        return
    if (key or settings.image.signing_key) is None:
        raise UsageError("sign needs --key cosign.key (or image.signing_key), or --keyless")
    signer = composition.cosign_signer(settings, private_key=key, formats=signature_format,
                                       password=cosign_password(ctx, confirm=False))
    info = signer.sign(reference)
    if output == "json":
        emit_json(info.__dict__)
        return
    done = ", ".join(info.created) if info.created else "nothing new (already signed)"
    typer.echo(f"signed {info.reference}: {done}")


@image_app.command("verify")
def verify(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="REPO@sha256:… to verify")],
    key: Annotated[Path | None, KEY_OPTION] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    """Exit 0 only if a signature by KEY over exactly this digest is valid.

    Only the public key is read: verifying needs neither the signing key nor COSIGN_PASSWORD.
    """
    from promoter.service import composition

    settings = state(ctx).settings()
    key = key or settings.image.verification_key
    if key is None:
        raise UsageError("verify needs --key cosign.pub (or image.verification_key)")
    if key.suffix == ".key":
        raise UserError(f"{key} looks like a private key", hint="verify with the .pub file")
    info = composition.cosign_verifier(settings, public_key=key).verify(reference)
    if output == "json":
        emit_json({"verified": True, **info.__dict__})
        return
    typer.echo(f"verified {info.reference} ({', '.join(info.formats)}) with key {info.key_hint}")


def _modelcar_layout(settings: Settings, runtime: str) -> str:
    """The layout under /models that ``runtime``'s descriptor names (modelcarLayout)."""
    from promoter.core.runtimes import parse_descriptors
    from promoter.rendering import load_descriptors, templates_dir

    descriptors = parse_descriptors(load_descriptors(templates_dir(settings)))
    descriptor = descriptors.get(runtime)
    if descriptor is None or descriptor.modelcar_layout is None:
        runs = sorted(name for name, d in descriptors.items() if d.modelcar_layout)
        raise UsageError(f"--runtime {runtime!r} does not run a modelcar "
                         f"(runtimes that do: {', '.join(runs)})")
    return descriptor.modelcar_layout
