"""`promoter hooks register|list`: the MLflow webhook that points at `promoter serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state
from promoter.errors import ConfigError

# The events promoter acts on or records; everything else MLflow can send is noise here.
EVENTS = [
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "registered_model.created",
]
DEFAULT_NAME = "promoter"

hooks_app = typer.Typer(help="Manage the MLflow webhook that calls promoter.",
                        no_args_is_help=True)


@hooks_app.command("register")
def register_hook(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        "--url", help="where MLflow sends events (default: http://<server.host>:<server.port>"
                      "/webhooks/mlflow)")] = None,
    name: Annotated[str, typer.Option("--name", help="webhook name in MLflow")] = DEFAULT_NAME,
    output: str = OUTPUT_OPTION,
) -> None:
    """Create the webhook, or update the existing one with the same name (else the same URL);
    refused when the name and the URL belong to two different webhooks.

    The secret is PROMOTER_MLFLOW_WEBHOOK_SECRET; `promoter serve` checks it on every delivery.
    """
    from promoter.service import composition

    settings = state(ctx).settings()
    secret = settings.secret("PROMOTER_MLFLOW_WEBHOOK_SECRET")
    if secret is None or not secret.reveal():
        raise ConfigError("PROMOTER_MLFLOW_WEBHOOK_SECRET is not set",
                          hint="set it (or PROMOTER_MLFLOW_WEBHOOK_SECRET_FILE) to a long random "
                               "value, here and for `promoter serve`")
    target = url or f"http://{settings.server.host}:{settings.server.port}/webhooks/mlflow"
    hook_id, created = composition.webhooks(settings).ensure_webhook(name, target, EVENTS,
                                                                     secret.reveal())
    if output == "json":
        emit_json({"id": hook_id, "name": name, "url": target, "events": EVENTS,
                   "created": created})
        return
    typer.echo(f"{'created' if created else 'updated'} webhook {name} ({hook_id}) → {target}")


@hooks_app.command("list")
def list_hooks(ctx: typer.Context, output: str = OUTPUT_OPTION) -> None:
    """List the webhooks registered in MLflow."""
    from promoter.service import composition

    hooks = composition.webhooks(state(ctx).settings()).webhooks()
    if output == "json":
        emit_json(hooks)
        return
    if not hooks:
        typer.echo("no webhooks")
    for hook in hooks:
        typer.echo(f"{hook['id']}  {hook['status']:<8} {hook['name']}  {hook['url']}  "
                   f"{','.join(hook['events'])}")


def register(app: typer.Typer) -> None:
    app.add_typer(hooks_app, name="hooks")
