"""The checks of `policy check`'s answer that could not be made, shown one way by every command
that asks it (`policy check`, and `rollback` before it moves anything): a ``NOT CHECKED`` line
per reason in text, ``not_checked`` (a list, empty when every check was made) in JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from promoter.policy_check import PolicyCheck


def as_json(checked: PolicyCheck) -> list[dict[str, Any]]:
    return [{"checks": list(unread.checks), "reason": unread.reason}
            for unread in checked.not_checked]


def lines(checked: PolicyCheck) -> list[str]:
    return [f"NOT CHECKED  {'; '.join(unread.checks)} ({unread.reason})"
            for unread in checked.not_checked]


def echo(checked: PolicyCheck, *, err: bool = False) -> None:
    for line in lines(checked):
        typer.echo(line, err=err)
