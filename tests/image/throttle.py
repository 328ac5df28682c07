"""A TCP proxy that slows what a client sends (a slow uplink in front of a real registry), so
an upload takes longer than a token lives while re-reading the blob locally stays fast."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def _pump(source: socket.socket, target: socket.socket, rate: float | None) -> None:
    try:
        while data := source.recv(4096):
            if rate is not None:
                time.sleep(len(data) / rate)
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def throttled(upstream: str, bytes_per_second: float) -> Iterator[str]:
    """Yields ``127.0.0.1:<port>`` forwarding to ``upstream`` (host:port); bytes towards the
    upstream go at ``bytes_per_second``, answers at full speed."""
    host, _, port = upstream.rpartition(":")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection((host, int(port)))
            sockets.extend((client, server))
            threading.Thread(target=_pump, args=(client, server, bytes_per_second),
                             daemon=True).start()
            threading.Thread(target=_pump, args=(server, client, None), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for sock in sockets:
            sock.close()
