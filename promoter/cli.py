"""The `promoter` command line: global options, command discovery, and the one error handler.

Each module in ``promoter.commands`` contributes its commands through ``register(app)``; this
module only wires them up and maps errors to exit codes (see promoter.errors). Command modules
import heavy libraries (mlflow, gitlab, ...) inside their functions so `promoter --help` is fast.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from promoter import __version__, commands
from promoter.commands._common import AppState
from promoter.errors import (
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    EXIT_USER,
    PromoterError,
    exit_code_for,
)

app = typer.Typer(
    name="promoter",
    help="GitOps promotion from the MLflow Model Registry to GitLab merge requests.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    """promoter's version, then the external tools it found, so a bug report carries them."""
    if value:
        from promoter.service import composition

        typer.echo(f"promoter {__version__}")
        typer.echo(f"python: {sys.version.split()[0]}")
        for tool, found in composition.tool_versions().items():
            typer.echo(f"{tool}: {found}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", envvar="PROMOTER_CONFIG", help="promoter.yaml (default: built-in)",
        dir_okay=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="print the versions of promoter and of the tools it runs, and exit")] = False,
) -> None:
    ctx.obj = AppState(config_path=config, debug=debug)


for _module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    if not _module.name.startswith("_"):
        importlib.import_module(f"promoter.commands.{_module.name}").register(app)


_LIST_ITEM = re.compile(r"\s|[-*] |\d+[.)] ")


def reflow(text: str) -> str:
    """Help text as prose the terminal wraps: the sources wrap lines at 100 columns, and this
    typer keeps every line break, so on an 80-column terminal each line broke in two. Lines
    of a paragraph are joined; a line starting a list item or indented stays on its own."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        joined = lines[:1]
        for line in lines[1:]:
            if _LIST_ITEM.match(line):
                joined.append(line)
            else:
                joined[-1] = f"{joined[-1]} {line}"
        paragraphs.append("\n".join(joined))
    return "\n\n".join(paragraphs)


def command() -> Any:
    """The click command tree behind ``app``, with flags shown without a metavar.

    This typer prints every option's type in help, flags too (``--debug <bool>``); a flag
    takes no value, so its type column stays empty, for --help and the completion flags as
    well (those are made lazily, hence the context)."""
    root = typer.main.get_command(app)
    pending = [root]
    while pending:
        current = pending.pop()
        pending.extend(getattr(current, "commands", {}).values())
        if current.help:
            current.help = reflow(current.help)
        flags = list(current.params)
        help_option = current.get_help_option(current.context_class(current))
        if help_option is not None:
            flags.append(help_option)
        for param in flags:
            if getattr(param, "is_flag", False):
                param.metavar = ""
    return root


def hoist_global_options(argv: list[str]) -> list[str]:
    """Let --config/--debug appear anywhere (``promoter render ... --config f``), as users type."""
    hoisted: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest.append(arg)
            rest.extend(args)
            break
        if arg in ("--config", "-c"):
            hoisted.extend([arg, next(args, "")])
        elif arg.startswith("--config=") or arg == "--debug":
            hoisted.append(arg)
        else:
            rest.append(arg)
    return hoisted + rest


# How long the first Ctrl-C may take to end the process before it is ended without cleanup.
INTERRUPT_GRACE_SECONDS = 10.0


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # the process's own command line: Ctrl-C must always end it
        _arm_interrupt_watchdog()
    argv = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in argv
    try:
        # Without standalone mode click does not raise typer.Exit(code) from a command: it
        # returns the code. Anything else a command returns is not an exit code.
        returned = command().main(args=argv, prog_name="promoter", standalone_mode=False)
    except typer.Exit as exc:  # raised from callbacks such as --version
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except PromoterError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except OSError as exc:  # a path the user gave cannot be read or written: not a bug
        if debug:
            raise
        typer.echo(f"error: {_describe_os_error(exc)}", err=True)
        sys.exit(EXIT_USER)
    except Exception as exc:  # the last line of defence: a bug, said plainly
        if _is_click_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if type(exc).__name__ == "Abort":
            typer.echo("aborted", err=True)
            sys.exit(130)
        if debug:
            raise
        typer.echo(f"unexpected error: {type(exc).__name__}: {exc}\n"
                   "  hint: run again with --debug for the traceback, and report it", err=True)
        sys.exit(EXIT_UNEXPECTED)
    code = returned if isinstance(returned, int) and not isinstance(returned, bool) else 0
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130) before we can see it
        typer.echo("interrupted", err=True)
    sys.exit(code)


def _arm_interrupt_watchdog() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual, and also starts a timer that ends the
    process (exit 130) if it is still running after INTERRUPT_GRACE_SECONDS; a second Ctrl-C
    ends it at once. A KeyboardInterrupt can be held up: by a C call that retries after the
    signal (SQLite's busy wait), by library code that catches it, or by exit handlers waiting
    on threads. Ending without cleanup loses nothing: a job stays in the durable queue and its
    lease runs out. Only for the process's own command line: in-process callers (tests) keep
    their own handler."""
    import os
    import signal
    import threading

    interrupted = threading.Event()

    def end_now() -> None:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    def on_interrupt(_signum: int, _frame: object) -> None:
        if interrupted.is_set():
            end_now()
        interrupted.set()
        timer = threading.Timer(INTERRUPT_GRACE_SECONDS, end_now)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)


def _is_click_usage_error(exc: BaseException) -> bool:
    # typer vendors its own click in recent releases; match click's exception shape instead of
    # importing a private module.
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def _describe_os_error(exc: OSError) -> str:
    """``/etc/passwd/x.key: Not a directory`` — the path and the system's reason, one line."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' → '.join(paths)}: {reason}" if paths else reason
