"""Progress on a terminal shows user text as typed: rich reads no markup in it."""

from __future__ import annotations

import io
import re

import pytest

from promoter.progress import Progress


@pytest.mark.parametrize("model", ["x [/]", "[bold]m[/bold]", "a[/link]b", "[red"])
def test_a_model_name_with_brackets_is_shown_as_typed(model: str) -> None:
    """`progress.task(f"building the image for {model}")` handed the name to rich with
    markup on: on a terminal, "x [/]" raised MarkupError (closing tag with nothing open)
    and "[bold]" styled the line instead of showing it."""
    from rich.console import Console

    shown = io.StringIO()
    progress = Progress(enabled=True)
    progress._console = Console(file=shown, force_terminal=True, width=200,
                                color_system=None)
    with progress.task(f"building the image for {model}") as task:
        task.status(f"building the image for {model}: layer [/] {model}")
        progress.console.print()   # rich draws the live line on a refresh, as a terminal does
        task.transfer(f"{model} [/]", 10, 100)
    output = shown.getvalue()
    assert f"building the image for {model}: " in output, output
    assert f"building the image for {model}: {model} [/]" in output, output   # the live line


@pytest.mark.parametrize("detail", ["team x [/]", "[bold]prod[/bold]"])
def test_a_promotion_step_detail_is_shown_as_typed(detail: str) -> None:
    """`promoter promote` prints each step's detail (a denial quoting the version's tags)
    through rich on a terminal, where "[/]" raised MarkupError."""
    from rich.console import Console

    from promoter.commands.promote import _Printer

    shown = io.StringIO()
    printer = _Printer("text")
    printer.console = Console(file=shown, force_terminal=True, width=200, color_system=None)
    printer("policy", "denied", detail)
    assert detail in shown.getvalue()


@pytest.mark.parametrize("model", [":warning:", "x:rocket:y", ":smiley: [/]"])
def test_emoji_codes_in_user_text_are_shown_as_typed(model: str) -> None:
    """markup=False still let rich turn ":warning:" or ":rocket:" in a model name, a file or
    a step's detail into an emoji on a terminal: the line no longer said what was typed."""
    from rich.console import Console

    from promoter.commands.promote import _Printer

    shown = io.StringIO()
    progress = Progress(enabled=True)
    progress._console = Console(file=shown, force_terminal=True, width=200,
                                color_system=None)
    progress.line(f"pushed {model}")
    with progress.task(f"building the image for {model}") as task:
        progress.console.print()   # rich draws the live line on a refresh, as a terminal does
        task.transfer(f"{model} blob", 10, 100)
    printer = _Printer("text")
    printer.console = progress.console
    printer("policy", "denied", f"tag {model}")
    output = shown.getvalue()
    assert f"pushed {model}\n" in output, output
    assert f"building the image for {model}: {model} blob" in output, output   # the live line
    assert re.search(re.escape(f"building the image for {model}: ") + r"[0-9.]+ s\n",
                     output), output                                           # the summary
    assert f"denied     tag {model}" in output, output
    assert "\u26a0" not in output and "\U0001f680" not in output and "\U0001f603" not in output
