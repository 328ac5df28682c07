"""Progress on long steps: rich on a terminal, nothing at all off it (or with --output json).

Commands make one ``Progress`` from their output mode and open a ``task``; library code only
gets its two plain callables (``Task.status`` for what happens now, ``Task.transfer`` for
bytes moving) and never learns whether a terminal is attached. rich is imported only when a
terminal will show something.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Task:
    """What a long step reports. This one shows nothing (off a terminal)."""

    def status(self, text: str) -> None:
        """Replace the line shown beside the spinner."""

    def transfer(self, what: str, done: int, total: int) -> None:
        """Bytes sent so far of ``total`` (0: not known), shown with the rate."""


class _LiveTask(Task):
    def __init__(self, bar: Any, task: Any, text: str) -> None:
        self.bar, self.task, self.text = bar, task, text
        self.started: float | None = None

    def status(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def transfer(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        self.started = self.started if self.started is not None else now
        rate = done / (now - self.started) if now > self.started else 0.0
        sent = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        self.bar.update(self.task, description=f"{self.text}: {what}",
                        sent=f"{sent} at {rate / 1e6:.1f} MB/s" if rate else sent)


class Progress:
    """``Progress.for_output(output)``: live only for text output on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._console: Any = None

    @classmethod
    def for_output(cls, output: str = "text") -> Progress:
        return cls(output == "text" and sys.stdout.isatty())

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        return self._console

    def line(self, text: str) -> None:
        """A line of output that a live display, if one runs, keeps above itself."""
        if self.enabled:
            # As typed: no markup ("[/]" is a closing tag to rich) and no emoji codes (rich
            # turns ":warning:" into an emoji even with markup off).
            self.console.print(text, highlight=False, markup=False, emoji=False)
        else:
            print(text, flush=True)

    @contextmanager
    def task(self, text: str) -> Iterator[Task]:
        """A spinner, the current status, and bytes with their rate while the block runs."""
        if not self.enabled:
            yield Task()
            return
        from rich.progress import Progress as Live
        from rich.progress import SpinnerColumn, TextColumn

        started = time.monotonic()
        # No bar: most long steps have no size; bytes and rate appear once a transfer reports.
        # No markup: descriptions carry user text (a model name, a file), and rich would read
        # "x [/]" as a closing tag (MarkupError) or "[bold]" as style. (A column without
        # markup makes plain Text, which replaces no emoji codes; the summary line below must
        # say emoji=False itself.)
        with Live(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                  TextColumn("{task.fields[sent]}", markup=False), console=self.console,
                  transient=True) as live:
            yield _LiveTask(live, live.add_task(text, total=None, sent=""), text)
        self.console.print(f"{text}: {time.monotonic() - started:.1f} s", highlight=False,
                           markup=False, emoji=False)
