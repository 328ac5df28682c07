"""The audit chain as files: ``<state_dir>/audit.jsonl`` and ``audit.head`` (SQLite setups).

Appends from several processes (serve, `promoter mr`, `promoter promote`) are serialised by an
exclusive ``flock`` on the file: the new entry's ``prev`` is read under the same lock. A
snapshot (what `audit verify` reads) takes a shared ``flock`` only to read the head and the
trail's length, so it never sees an entry whose head is not written yet; it reads the lines up
to that length after letting go, as appends only ever add bytes after it. Both files are the
owner's only (0600, in a 0700 state directory): they map models to MRs and people.

``audit.head`` is written twice per append: first naming the entry about to be written as
``pending`` (its seq and hash), then, once the entry is on disk, as the new head. A crash in
between leaves the trail one entry ahead of the head, and that entry is the pending one: it is
adopted (by the next append and by verify). An entry someone else appended is not pending, so
it is never adopted, however well it is sealed. The head always carries ``pending`` (null when
no entry is being written): a head without it was written by a promoter from before, whose
crash left its entry unnamed, and it adopts the one entry that chains onto it (``UNNAMED``).
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from promoter.core.audit_chain import (
    EMPTY,
    UNNAMED,
    Head,
    chain_onto,
    head_of,
    legacy_head,
    seal,
)
from promoter.state.db import ensure_state_dir

FILENAME = "audit.jsonl"
HEAD_FILENAME = "audit.head"
_lock = threading.Lock()
_TAIL_CHUNK = 64 * 1024
_log = logging.getLogger("promoter.audit")
# What reading a chained entry (or the head) out of an edited line can raise besides what JSON
# reports as ValueError: a missing key or a wrong type, a "seq" of 1e999 (int() of infinity:
# OverflowError), nesting deeper than json.loads goes (RecursionError). Each means the line is
# not an entry promoter wrote; raising instead would stop every append for good.
UNREADABLE = (ValueError, KeyError, TypeError, OverflowError, RecursionError)
T = TypeVar("T")


@dataclass(frozen=True)
class ChainSnapshot:
    """A chain's recorded head and its lines as of one moment (both chains'): the head read
    first and the lines afterwards would take in entries appended in between, and the trail
    would look longer than its head, as if edited. ``lines()`` may be read more than once,
    only while the snapshot is being read (inside ``snapshot(reader)``)."""

    head: Head | None
    read_lines: Callable[[], Iterator[str]]
    pending: Head | None = None   # the entry the head says was being written after it

    def lines(self) -> Iterator[str]:
        return self.read_lines()


class FileChain:
    def __init__(self, state_dir: Path) -> None:
        # The directory is made by the first append, not here: reading a trail that does not
        # exist yet (`policy check` on a fresh machine) leaves no state directory behind.
        directory = Path(state_dir).expanduser()
        self.path, self.head_path = directory / FILENAME, directory / HEAD_FILENAME

    def location(self) -> str:
        return str(self.path)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        ensure_state_dir(self.path.parent)
        with _lock, _open_private(self.path) as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                tail, last = _tail(handle, torn=_end_torn_line(handle, self.path))
                recorded, pending = self._read_head()
                onto = append_point(tail, last, recorded, self.path, pending)
                sealed = seal(entry, onto)
                line = json.dumps(sealed, sort_keys=True, default=str) + "\n"
                # Named before it is written: only so can a crash's entry be told from a forgery.
                self._write_head(onto, pending=head_of(sealed))
                handle.seek(0, os.SEEK_END)
                handle.write(line.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
                self._write_head(head_of(sealed))
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return sealed

    def lines(self) -> Iterator[str]:
        if self.path.exists():
            yield from _read_lines(self.path)

    def snapshot(self, reader: Callable[[ChainSnapshot], T]) -> T:
        """``reader`` run on the head and the lines, with no append in between: the head and
        the trail's length are read under a shared lock on the trail (an append holds it
        exclusively while it writes both), the lines up to that length after it is released.
        Appends only add bytes past the length (ending a torn last line included), so those
        lines are the trail as it was under the lock, while ``reader`` (a whole verification
        of the chain) keeps no append waiting."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return self._snapshot_without_trail(reader)
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                recorded, pending = self._read_head()
                size = os.fstat(handle.fileno()).st_size
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return reader(ChainSnapshot(recorded, lambda: _read_lines(self.path, size), pending))

    def _snapshot_without_trail(self, reader: Callable[[ChainSnapshot], T]) -> T:
        """No trail file to lock: its head, unless the first append made the file meanwhile
        (files are never removed, so a head read while there was none is the head of none)."""
        head, pending = self._read_head()
        if self.path.exists():
            return self.snapshot(reader)
        return reader(ChainSnapshot(head, lambda: iter(()), pending))

    def recorded_head(self) -> Head | None:
        return self._read_head()[0]

    def _read_head(self) -> tuple[Head | None, Head | None]:
        """The recorded head and the entry named as being written after it, if any."""
        try:
            data = json.loads(self.head_path.read_text(encoding="utf-8"))
            head = Head(int(data["seq"]), str(data["hash"]))
        except (OSError, *UNREADABLE):
            return None, None
        if "pending" not in data:
            return head, UNNAMED  # written by a promoter from before pending entries were named
        try:
            pending = data["pending"]
            return head, Head(int(pending["seq"]), str(pending["hash"]))
        except UNREADABLE:
            return head, None

    def _write_head(self, head: Head, *, pending: Head | None = None) -> None:
        # "pending" is always written, null when none: its absence marks an older head.
        data: dict[str, Any] = {"seq": head.seq, "hash": head.hash, "pending": None}
        if pending is not None:
            data["pending"] = {"seq": pending.seq, "hash": pending.hash}
        temporary = self.head_path.with_suffix(".tmp")
        with _open_private(temporary, truncate=True) as handle:
            handle.write(json.dumps(data).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.head_path)


def _read_lines(path: Path, size: int | None = None) -> Iterator[str]:
    """The trail's non-blank lines, of its first ``size`` bytes only when given (decoded and
    split as a file of just those bytes would be)."""
    with path.open("rb", buffering=0) as raw:
        prefix = io.BufferedReader(raw if size is None else _Prefix(raw, size))
        with io.TextIOWrapper(prefix, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\n")


class _Prefix(io.RawIOBase):
    """The first ``size`` bytes of ``raw``, read from where it is."""

    def __init__(self, raw: io.FileIO, size: int) -> None:
        super().__init__()
        self._raw, self._left = raw, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        with memoryview(buffer) as view:
            read = self._raw.readinto(view[:self._left]) or 0
        self._left -= read
        return read


def _open_private(path: Path, *, truncate: bool = False) -> IO[bytes]:
    """Open for appending (or rewriting), creating the file readable by its owner only."""
    flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    return os.fdopen(os.open(path, flags, 0o600), "r+b")


def append_point(tail: Head, last: dict[str, Any] | None, recorded: Head | None,
                 where: object, pending: Head | None = None) -> Head:
    """core.audit_chain.chain_onto, logged when it is not the trail's end (both chains')."""
    head = chain_onto(tail, last, recorded, pending)
    if head != tail:
        _log.error("the audit trail %s ends at entry %s, not at its recorded head %s: it was "
                   "cut short, its end edited, or entries promoter did not write were appended; "
                   "appending onto the recorded head so the break stays for `promoter audit "
                   "verify` to find", where, tail.seq, recorded.seq if recorded else None)
    return head


def _end_torn_line(handle: IO[bytes], where: object) -> bool:
    """End the trail's last line if it lacks its newline, so the next entry starts a line of
    its own: written onto it, the next entry would be unreadable too. True if the line was
    half written (an interrupted append: a crash, a full disk): it does not parse, and stays
    for ``audit verify`` to report. A line that parses is a whole entry whose newline alone
    was lost (the write cut off at its last byte) and is kept as it is: verify reads it, and
    as the pending entry it is the chain's head; passed over, it would be forked."""
    end = handle.seek(0, os.SEEK_END)
    if end == 0:
        return False
    handle.seek(end - 1)
    if handle.read(1) == b"\n":
        return False
    torn = not _is_entry(_last_line(handle, end))
    if torn:
        _log.error("the audit trail %s ends in a half-written line (an interrupted append); "
                   "ending it there so the next entry is a line of its own", where)
    else:
        _log.warning("the audit trail %s ends in an entry without its newline (an append "
                     "interrupted at its last byte); adding the newline", where)
    handle.seek(0, os.SEEK_END)
    handle.write(b"\n")
    handle.flush()
    os.fsync(handle.fileno())
    return torn


def _last_line(handle: IO[bytes], end: int) -> bytes:
    """The trail's last line (read back from ``end``, a chunk at a time)."""
    start, tail = end, b""
    while start > 0 and b"\n" not in tail:
        start = max(0, start - _TAIL_CHUNK)
        handle.seek(start)
        tail = handle.read(end - start)
    return tail.rsplit(b"\n", 1)[-1]


def _is_entry(line: bytes) -> bool:
    """Whether ``line`` is a whole JSON object: a write cut short never is, as the object
    closes only at the line's last byte."""
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):  # nested too deeply for json: edited, not an entry
        return False


def _tail(handle: IO[bytes], *, torn: bool = False) -> tuple[Head, dict[str, Any] | None]:
    """The head of the chain in an open trail and its last entry (None when the last line is
    not a chained entry), read from the end; a ``torn`` last line (half written) is passed
    over: the chain ends before it."""
    end = handle.seek(0, os.SEEK_END)
    start, tail = end, b""
    while start > 0 and tail.count(b"\n") < (3 if torn else 2):
        start = max(0, start - _TAIL_CHUNK)
        handle.seek(start)
        tail = handle.read(end - start)
    lines = tail.rstrip(b"\n").split(b"\n") if tail.strip() else []
    if torn:
        lines = lines[:-1]
    if not lines:
        return EMPTY, None
    try:
        entry = json.loads(lines[-1])
        return head_of(entry), entry
    except UNREADABLE:
        # A trail written before entries were chained: chain on from all of it. (Or its end
        # was edited past reading: then this is not the recorded head, and append_point
        # chains onto that instead and logs the break, rather than every append raising.)
        handle.seek(0)
        return legacy_head(line.decode("utf-8", "replace")
                           for line in handle.read().splitlines() if line.strip()), None
