"""The upload's SHA-256 computed on a thread of its own (promoter.adapters.oci_hashing)."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest

from promoter.adapters.oci_hashing import BackgroundHash


def _pieces(count: int) -> list[bytes]:
    return [os.urandom(3000 + 17 * index) for index in range(count)]


def test_the_digest_covers_every_piece_in_the_order_handed_over() -> None:
    pieces = _pieces(40)  # far more than the queue holds: the caller waits, nothing is lost
    running = BackgroundHash(depth=2)
    for piece in pieces:
        running.update(piece)
    assert running.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    running.close()


def test_a_state_taken_mid_way_covers_exactly_what_was_handed_over_so_far() -> None:
    pieces = _pieces(10)
    running = BackgroundHash(depth=3)
    for piece in pieces[:6]:
        running.update(piece)
    mark = running.state()
    for piece in pieces[6:]:
        running.update(piece)
    assert mark.hexdigest() == hashlib.sha256(b"".join(pieces[:6])).hexdigest()
    # Resuming from the mark (an upload refused mid-way) continues that hash, not a new one.
    resumed = BackgroundHash(mark)
    for piece in pieces[6:]:
        resumed.update(piece)
    assert resumed.hexdigest() == running.hexdigest() \
        == hashlib.sha256(b"".join(pieces)).hexdigest()
    running.close()
    resumed.close()


def test_the_pieces_are_hashed_on_another_thread_than_the_caller() -> None:
    """What makes it worth a thread: the caller sends the next piece meanwhile."""
    threads: set[int] = set()

    class Recording:
        def __init__(self) -> None:
            self._hash = hashlib.sha256()

        def update(self, data: bytes) -> None:
            threads.add(threading.get_ident())
            self._hash.update(data)

        def copy(self) -> Any:
            return self._hash.copy()

    running = BackgroundHash(Recording())  # type: ignore[arg-type]
    for piece in _pieces(5):
        running.update(piece)
    running.state()
    running.close()
    assert threads and threading.get_ident() not in threads


def test_closing_ends_the_thread_even_with_pieces_still_queued() -> None:
    gate = threading.Event()

    class Stalled:
        def update(self, data: bytes) -> None:
            gate.wait(5)

        def copy(self) -> Any:
            return hashlib.sha256()

    running = BackgroundHash(Stalled(), depth=2)  # type: ignore[arg-type]
    for piece in _pieces(3):  # one in hand, two queued: the queue is full
        running.update(piece)
    gate.set()
    running.close()
    assert not [t for t in threading.enumerate() if t.name == "upload-hash" and t.is_alive()]
    with pytest.raises(RuntimeError, match="closed"):
        running.update(b"late")
    running.close()  # twice is harmless
