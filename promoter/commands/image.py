"""`promoter image build|sign|verify`: the serving image, without a Docker daemon."""

from __future__ import annotations

import contextlib
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, is_tty, state
from promoter.commands.keys import cosign_password
from promoter.errors import UsageError, UserError

if TYPE_CHECKING:
    from promoter.ports.image import SignatureInfo
    from promoter.settings import Settings
    from promoter.signing.service import CosignSigner

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


def _progress(message: str) -> AbstractContextManager[object]:
    """A spinner on a terminal; nothing when the output is read by a program."""
    if not is_tty():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


@image_app.command("build")
def build(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="models:/NAME/VERSION, runs:/ID/PATH or a dir")],
    repository: Annotated[str | None, typer.Option(
        "--repository", "-r", help="REGISTRY/REPO to push to (default: image.repository)")
    ] = None,
    base: Annotated[str | None, typer.Option("--base", help="base image (default: image.base)")
                    ] = None,
    oci_layout: Annotated[Path | None, typer.Option(
        "--oci-layout", file_okay=False, help="write an OCI image layout here, push nothing")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="tag (default: v<model version>)")
                   ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="extra key=value")
                     ] = None,
    output: str = OUTPUT_OPTION,
) -> None:
    """Build the serving image for MODEL and push it; prints REPO@sha256:…"""
    from promoter.adapters.mlflow_artifacts import download_model, resolve_model
    from promoter.image.service import DaemonlessImageBuilder

    settings = state(ctx).settings()
    lineage = resolve_model(model, settings.mlflow.tracking_uri)
    target = repository or settings.image.repository
    if target and "{name}" in target:
        target = target.replace("{name}", lineage.name or Path(model).name)
    if not target and oci_layout is None:
        raise UsageError("say where the image goes: --repository REGISTRY/REPO, "
                         "image.repository in promoter.yaml, or --oci-layout DIR")
    builder = DaemonlessImageBuilder(settings.image, settings.state_dir, layout=oci_layout)
    target = target or "localhost/promoter-image"
    labels = _labels(label or [])
    with _progress("checking for an image built from the same inputs"):
        built = builder.find_existing(target, base=base, labels=labels, lineage=lineage,
                                      tag=tag)
    if built is None:
        with tempfile.TemporaryDirectory(prefix="promoter-model-") as scratch, \
                _progress(f"building and pushing the image for {model}"):
            model_dir = download_model(model, Path(scratch), settings.mlflow.tracking_uri)
            built = builder.build(model_dir, target, base=base, labels=labels,
                                  lineage=lineage, tag=tag)
    reference = f"oci:{oci_layout}@{built.digest}" if oci_layout else built.reference
    if output == "json":
        emit_json({"reference": reference, "digest": built.digest, "size": built.size,
                   "layers": built.layers, "bytes_uploaded": built.bytes_uploaded,
                   "tag": built.tag, "notes": built.notes})
        return
    for note in built.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(reference)


def _signer(settings: Settings, *, private: Path | None = None, public: Path | None = None,
            password: str = "", formats: list[str] | None = None) -> CosignSigner:
    from promoter.adapters.oci import client_for
    from promoter.signing import keys
    from promoter.signing.service import CosignSigner

    chosen = formats or list(settings.image.signature_formats)
    unknown = set(chosen) - {"bundle", "legacy"}
    if unknown:
        raise UsageError(f"--format must be bundle or legacy, not {', '.join(sorted(unknown))}")
    signing_key = (keys.load_signing_key(keys.read_key_file(private), password, name=str(private))
                   if private else None)
    public_key = (keys.load_public_key(keys.read_key_file(public), name=str(public))
                  if public else None)
    return CosignSigner(lambda registry: contextlib.closing(client_for(registry, settings.image)),
                        signing_key=signing_key, public_key=public_key, formats=chosen)


def _sign_keyless(settings: Settings, reference: str) -> SignatureInfo:
    import os

    from promoter.adapters.oci import client_for
    from promoter.adapters.oci_keyless import SigstoreServices
    from promoter.image.reference import parse_reference
    from promoter.signing.keyless import sign_keyless

    secret = settings.secret("SIGSTORE_ID_TOKEN")
    # SIGSTORE_ID_TOKEN is not (yet) among the settings' secret variables: read it directly.
    token = secret.reveal() if secret else os.environ.get("SIGSTORE_ID_TOKEN", "")
    if not token:
        raise UserError("--keyless needs an OIDC identity token in SIGSTORE_ID_TOKEN",
                        hint="in GitLab CI add id_tokens: {SIGSTORE_ID_TOKEN: {aud: sigstore}} "
                             "to the job")
    services = SigstoreServices(settings.image.fulcio_url, settings.image.rekor_url)
    client = client_for(parse_reference(reference).api_host, settings.image)
    try:
        return sign_keyless(client, services, token, reference)
    finally:
        client.close()
        services.close()


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
    settings = state(ctx).settings()
    if keyless:
        info = _sign_keyless(settings, reference)
        if output == "json":
            emit_json(info.__dict__)
        else:
            typer.echo(f"signed {info.reference} keyless (bundle, certificate from Fulcio)")
        return
    key = key or settings.image.signing_key
    if key is None:
        raise UsageError("sign needs --key cosign.key (or image.signing_key), or --keyless")
    signer = _signer(settings, private=key, password=cosign_password(ctx, confirm=False),
                     formats=signature_format)
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
    """Exit 0 only if a signature by KEY over exactly this digest is valid."""
    settings = state(ctx).settings()
    key = key or settings.image.verification_key
    if key is None:
        raise UsageError("verify needs --key cosign.pub (or image.verification_key)")
    if key.suffix == ".key":
        raise UserError(f"{key} looks like a private key", hint="verify with the .pub file")
    info = _signer(settings, public=key).verify(reference)
    if output == "json":
        emit_json({"verified": True, **info.__dict__})
        return
    typer.echo(f"verified {info.reference} ({', '.join(info.formats)}) with key {info.key_hint}")
