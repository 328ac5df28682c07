"""`promoter keys generate`: a cosign-compatible key pair (PREFIX.key encrypted, PREFIX.pub)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, is_tty, state
from promoter.errors import UserError

keys_app = typer.Typer(help="Manage cosign-compatible signing keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def cosign_password(ctx: typer.Context, *, confirm: bool) -> str:
    """COSIGN_PASSWORD (empty allowed), or a hidden prompt on a terminal, as cosign does."""
    secret = state(ctx).settings().secret("COSIGN_PASSWORD")
    if secret is not None:
        return secret.reveal()
    if is_tty():
        return str(typer.prompt("Password for the cosign key", hide_input=True,
                                confirmation_prompt=confirm, default="", show_default=False))
    raise UserError("COSIGN_PASSWORD is not set",
                    hint="export COSIGN_PASSWORD (an empty value means no password), or set "
                         "COSIGN_PASSWORD_FILE to a file holding it")


@keys_app.command("generate")
def generate(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", help="PREFIX: writes PREFIX.key and PREFIX.pub")
                   ] = "cosign",
    force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
    output: str = OUTPUT_OPTION,
) -> None:
    """Generate an ECDSA P-256 key pair in cosign's format (password: COSIGN_PASSWORD)."""
    from promoter.signing.keys import generate_key_pair, load_public_key

    private_path, public_path = Path(f"{out}.key"), Path(f"{out}.pub")
    # lexists: a dangling symlink is something there too, and --force replaces it (the link,
    # never what it points at).
    existing = [str(p) for p in (private_path, public_path) if os.path.lexists(p)]
    if existing and not force:
        raise UserError(f"{' and '.join(existing)} already exist",
                        hint="choose another --out prefix, or pass --force to replace them")
    private_pem, public_pem = generate_key_pair(cosign_password(ctx, confirm=True))
    write_replacing(private_path, private_pem, 0o600)
    write_replacing(public_path, public_pem, 0o644)  # as cosign writes its .pub
    hint = load_public_key(public_pem).hint
    if output == "json":
        emit_json({"private_key": str(private_path), "public_key": str(public_path),
                   "key_hint": hint})
        return
    typer.echo(f"Private key written to {private_path}")
    typer.echo(f"Public key written to {public_path}")


def write_replacing(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file of ``mode`` and rename it onto ``path``.

    Opening ``path`` itself with O_TRUNC (as --force once did) kept an existing file's mode,
    so a private key written over a 0644 file stayed readable by everyone, and followed a
    symlink there, writing the key wherever it pointed. A file of our own, made with O_EXCL
    beside ``path`` (same filesystem, so the rename is atomic), has only the mode given, and
    the rename replaces whatever is at ``path``, a symlink included, not its target.
    """
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # no empty key under its name after a crash
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
    except OSError as exc:  # name the file asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
