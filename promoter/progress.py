"""Progress on long steps: rich on a terminal, nothing at all off it (or with --output json).

Commands make one ``Progress`` from their output mode; library code gets plain callables
(``Status`` for "what is happening now", ``Transfer`` for bytes moving) and never learns
whether a terminal is attached. rich is imported only when a terminal will show something.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Status = Callable[[str], None]              # replace the line shown under a spinner
Transfer = Callable[[str, int, int], None]  # (what, bytes done, bytes total or 0)


def _ignore(*_args: object) -> None:
    return None


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

    @contextmanager
    def status(self, text: str) -> Iterator[Status]:
        """A spinner with ``text`` while the block runs; the callable changes the text."""
        if not self.enabled:
            yield _ignore
            return
        with self.console.status(text) as live:
            yield lambda new: live.update(new)

    @contextmanager
    def transfer(self, text: str) -> Iterator[Transfer]:
        """A bar with bytes and rate while the block runs (total 0: size not known yet)."""
        if not self.enabled:
            yield _ignore
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        with Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                 TransferSpeedColumn(), console=self.console, transient=True) as bar:
            task = bar.add_task(text, total=None)
            started = time.monotonic()

            def update(what: str, done: int, total: int) -> None:
                bar.update(task, description=f"{text}: {what}", completed=done,
                           total=total or None)

            yield update
            self.console.print(f"  {text}: done in {time.monotonic() - started:.1f} s",
                               highlight=False)
