"""SHA-256 of an upload's bytes, computed on a thread of its own while they are sent.

A blob whose digest is not known yet is hashed as it is uploaded. Hashed on the sending
thread, each piece is first hashed, then sent: the two costs add up. hashlib releases the GIL
while it hashes a piece (anything over 2 KiB), as the socket does while it sends one, so on a
thread of its own the hash of one piece runs while the next is read and sent. The pieces
still reach the hash one by one, in the order they were handed out (a bounded queue keeps
memory flat: at most ``depth`` pieces wait), and every state read first waits until all the
pieces handed out so far are in it.
"""

from __future__ import annotations

import hashlib
import queue
import threading


class BackgroundHash:
    """A running SHA-256 fed from the caller's thread and computed on another one."""

    def __init__(self, start: hashlib._Hash | None = None, *, depth: int = 8) -> None:
        self._hash = start if start is not None else hashlib.sha256()
        self._pieces: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="upload-hash", daemon=True)
        self._thread.start()

    def update(self, piece: bytes) -> None:
        """Hand ``piece`` over (it must not change afterwards: bytes, not a reused buffer)."""
        if not self._thread.is_alive():
            raise RuntimeError("the upload hash is closed")
        self._pieces.put(piece)

    def state(self) -> hashlib._Hash:
        """A copy of the hash over every piece handed over so far."""
        self._pieces.join()
        return self._hash.copy()

    def hexdigest(self) -> str:
        return self.state().hexdigest()

    def close(self) -> None:
        """End the thread; pieces still waiting are dropped unhashed."""
        if not self._thread.is_alive():
            return
        while True:  # make room for the stop mark, whatever is still queued
            try:
                self._pieces.get_nowait()
                self._pieces.task_done()
            except queue.Empty:
                break
        self._pieces.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            piece = self._pieces.get()
            try:
                if piece is None:
                    return
                self._hash.update(piece)
            finally:
                self._pieces.task_done()
