"""What every command shares: lazily loaded settings and output helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import typer

from promoter.settings import Settings, load_settings

OutputFormat = Literal["text", "json"]
OUTPUT_OPTION = typer.Option("text", "--output", "-o", help="text or json")


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
