"""The audit trail: one JSON object per entry, hash-chained, never rewritten.

Every decision promoter takes or observes lands here: job outcomes (promoted, denied, failed),
merge-request events (approved, merged, closed) and write-backs that could not be made. Each
entry carries its actor (the webhook source, the CLI user, the GitLab user of a hook), the
digests of its inputs where it has them, and the SHA-256 of the entry before it
(core.audit_chain), so an edited, deleted, reordered or inserted entry is found by
``promoter audit verify``; the chain head is also kept apart so a trail cut short is found
too. Entries never hold secrets (only names, versions, URLs, reasons).

Where the chain lives follows the state: files beside SQLite's state.db
(promoter.service.audit_file), or tables of the PostgreSQL state database shared by every
replica (promoter.service.audit_table). The meaning of every method is the same for both.
Whatever checks the lines against the head reads both in one ``snapshot``: other processes
append all the time, and a head read apart from the lines would be older than they are.

What promoter decides from the trail (the staging-first gate's soak clock, GC's idle TTL,
rollback targets, which MR outcome replaced which) rests on the entries before its first bad
line only (``verified``): anyone who can write the state can append a well-formed, well-sealed
entry (the hash has no key), and one claiming a version went live in staging days ago would
otherwise carry that version past the soak gate into production.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from promoter.core.audit_chain import Finding, Head, verify
from promoter.core.live_history import Live, first_live, live_at
from promoter.core.masking import without_credentials
from promoter.errors import NotFoundError, PromoterError
from promoter.service.audit_file import FILENAME, HEAD_FILENAME, ChainSnapshot, FileChain
from promoter.service.audit_table import TableChain
from promoter.state.db import StateDB
from promoter.state.storable import storable_fields

__all__ = ["FILENAME", "HEAD_FILENAME", "AuditTrail", "ChainSnapshot", "Read"]
T = TypeVar("T")
_log = logging.getLogger("promoter.audit")


class _Chain(Protocol):
    def location(self) -> str: ...

    def append(self, entry: dict[str, Any]) -> dict[str, Any]: ...

    def lines(self) -> Iterator[str]: ...

    def recorded_head(self) -> Head | None: ...

    def snapshot(self, reader: Callable[[ChainSnapshot], T]) -> T: ...


@dataclass(frozen=True)
class Read:
    """Every readable entry of one snapshot with its line number, and where the trail stops
    verifying (`audit show` and `audit live`, which report what lies past it)."""

    entries: list[tuple[int, dict[str, Any]]]
    finding: Finding | None

    def verified(self, line: int) -> bool:
        return self.finding is None or line < self.finding.line


class AuditTrail:
    def __init__(self, state_dir: Path, db: StateDB | None = None) -> None:
        """The trail of ``state_dir`` (files), or, given a database that keeps it (the
        PostgreSQL state), the trail in that database."""
        self._chain: _Chain
        if db is not None and db.dialect == "postgresql":
            self._chain = TableChain(db)
            self.path = db.path
        else:
            file_chain = FileChain(state_dir)
            self._chain, self.path = file_chain, file_chain.path
            self.head_path = file_chain.head_path

    @property
    def location(self) -> str:
        """Where the trail is, for messages (a file path or the redacted database URL)."""
        return self._chain.location()

    def record(self, event: str, *, actor: str | None = None,
               inputs: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"time": round(time.time(), 3), "event": event, **fields}
        if actor:
            entry["actor"] = actor
        if inputs:
            entry["inputs"] = dict(sorted(inputs.items()))
        # A reason or name quoted from outside may hold what no store can write (state.storable),
        # or a URL's credentials (a version's source in a denial, an error body quoting a
        # signed URL): once sealed, an entry cannot be changed without breaking the chain, so
        # they are masked before sealing. Only new entries: the hash covers what is stored.
        return self._chain.append(storable_fields(entry, without_credentials))

    @contextlib.contextmanager
    def writing_back(self, model: str, version: str, env: str,
                     **facts: Any) -> Iterator[None]:
        """Around MLflow writes about ``model`` ``version`` in ``env``: MLflow's "does not
        exist" (the model or version was deleted) is audited ``write_back.skipped`` and ends
        the block quietly, as there is nothing left to tag, while raising would have its caller
        retried for good; any other failure is audited ``write_back.failed`` and raised (the
        caller's delivery or job is tried again)."""
        try:
            yield
        except NotFoundError as exc:
            self.write_back_skipped(exc, model, version, env, **facts)
        except PromoterError as exc:
            self.record("write_back.failed", model=model, version=version, env=env, **facts,
                        reason=exc.message)
            raise

    def write_back_skipped(self, exc: NotFoundError, model: str, version: str, env: str,
                           **facts: Any) -> None:
        self.record("write_back.skipped", model=model, version=version, env=env, **facts,
                    reason=exc.message)

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every readable entry, verified or not (nothing decides from these: a decision reads
        ``verified``, a listing that marks what does not verify reads ``read``)."""
        return (entry for _, entry in numbered_entries(self.lines()))

    def verified(self, reader: Callable[[Iterator[dict[str, Any]]], T]) -> T:
        """``reader`` run on the entries before the trail's first bad line (every entry when
        it verifies), lines and head read in one snapshot as ``verify`` reads them. An entry
        from that line on was edited, inserted or appended by someone other than promoter,
        so it never counts (the entries promoter appends after it neither: they cannot be
        told from it until the trail is repaired); the break is logged once per read. A
        half-written line, an append cut short by a crash or a full disk, is passed over when
        the chain runs on unbroken around it (core.audit_chain.verify ``past_torn``): it holds
        no entry, and one interrupted append must not set aside all that follows for good.
        Streamed: ``reader`` folds the entries inside the snapshot, never holding them all."""
        def read(snapshot: ChainSnapshot) -> tuple[T, Finding | None]:
            finding = _finding(snapshot, past_torn=True)
            before = itertools.takewhile(lambda numbered: finding is None
                                         or numbered[0] < finding.line,
                                         numbered_entries(snapshot.lines()))
            return reader(entry for _, entry in before), finding

        result, finding = self.snapshot(read)
        if finding is not None:
            _log.warning("the audit trail %s does not verify from line %s (%s): promoter "
                         "decides from the entries before it only; `promoter audit verify` "
                         "names it", self.location, finding.line, finding.problem)
        return result

    def read(self) -> Read:
        """Every readable entry of one snapshot, numbered, with its first bad line (for those
        who show what lies past it; nothing logged: they say it themselves)."""
        return self.snapshot(lambda snapshot: Read(list(numbered_entries(snapshot.lines())),
                                                   _finding(snapshot, past_torn=True)))

    def lines(self) -> Iterator[str]:
        return self._chain.lines()

    def recorded_head(self) -> Head | None:
        return self._chain.recorded_head()

    def snapshot(self, reader: Callable[[ChainSnapshot], T]) -> T:
        """``reader`` run on the recorded head and the lines as of one moment: no entry
        another process appends meanwhile is in the lines unless it is in the head too."""
        return self._chain.snapshot(reader)

    def verify(self) -> Finding | None:
        """The first line that is not what was written, or None (see core.audit_chain)."""
        return self.snapshot(_finding)

    def live_since(self, model: str, version: str, env: str) -> float | None:
        """When ``version`` first became live in ``env``, still live or not (the
        DeploymentHistory port: the staging-first gate's soak clock), from verified entries
        only: a merge past the trail's first bad line never starts the clock (fail closed)."""
        return self.verified(lambda entries: first_live(entries, env, model, version))

    def doubt(self) -> str | None:
        """Why entries of the trail do not count for decisions, or None when it verifies (the
        DeploymentHistory port: said in a soak denial's reason). A read of its own, made
        only on a denial. Names the line, not the location: the reason reaches the MR."""
        finding = self.snapshot(lambda snapshot: _finding(snapshot, past_torn=True))
        if finding is None:
            return None
        return (f"the audit trail does not verify from line {finding.line}, and no entry "
                "from there on counts: run `promoter audit verify`")

    def live_now_since(self, model: str, version: str, env: str) -> float | None:
        """When ``version`` became live in ``env`` this time, if it is live now (None when
        another version, or nothing, is): how long a deployment has sat unchanged. Verified
        entries only."""
        now = time.time()
        return since_if(self.verified(lambda entries: live_at(entries, env, now, model))
                        .get(model), version)

    def live_now(self, env: str) -> dict[str, Live]:
        """{model: what is live in ``env`` now}, every model in one read of the trail (a
        caller asking about many deployments reads it once, not once per deployment).
        Verified entries only."""
        now = time.time()
        return self.verified(lambda entries: live_at(entries, env, now))


def numbered_entries(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number from 1, entry) of every line that reads as an entry; `audit verify`
    names the others, and readers skip what they cannot read."""
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            continue
        if isinstance(entry, dict):
            yield number, entry


def _finding(snapshot: ChainSnapshot, *, past_torn: bool = False) -> Finding | None:
    return verify(snapshot.lines(), snapshot.head, snapshot.pending, past_torn=past_torn)


def since_if(live: Live | None, version: str) -> float | None:
    """When ``live`` became live, if it is ``version``; None otherwise."""
    return live.since if live is not None and live.version == version else None
