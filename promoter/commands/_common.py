"""What every command shares: lazily loaded settings and output helpers."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from promoter.settings import Settings, load_settings

OutputFormat = Literal["text", "json"]
_VERSION = re.compile(r"[1-9][0-9]{0,9}")  # registry versions count from 1 (core.events agrees)


def one_of(*allowed: str) -> Callable[[str | None], str | None]:
    """An option callback: a value outside ``allowed`` is a usage error (exit 2) naming them."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return check


def check_version(value: str | None) -> str | None:
    """An option callback for --version: a model version is a positive integer (1, 2, ...)."""
    if value is not None and not _VERSION.fullmatch(value):
        raise typer.BadParameter(f"{value!r:.40} is not a model version; versions are 1, 2, 3, ...")
    return value


OUTPUT_OPTION = typer.Option("text", "--output", "-o", help="text or json",
                             callback=one_of("text", "json"))
# The telemetry commands (forecast, rightsize) name a deployment the same way: a registered
# model at its live (or a given) version, or an intent file; and propose or print.
LiveVersion = Annotated[str | None, typer.Option(
    "--version", "-v", callback=check_version, help="model version (default: the live one)")]
IntentFile = Annotated[Path | None, typer.Option(
    "--intent", "-i", dir_okay=False, help="ModelDeployment YAML file")]
ProposeFlag = Annotated[bool, typer.Option("--propose", help="open/update the MR")]


@dataclass
class AppState:
    config_path: Path | None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    if not isinstance(obj, AppState):  # commands invoked without the root callback (tests)
        obj = AppState(config_path=None)
        ctx.find_root().obj = obj
    return obj


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def is_tty() -> bool:
    return sys.stdout.isatty()
