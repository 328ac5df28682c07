"""The webhook listener and the probe listener of ``promoter serve``, in one event loop.

The probe listener runs in the webhook listener's event loop on purpose: a wedged loop fails
liveness, as it should, while a flood of webhook connections (answered 503 above
``server.max_connections``) does not. The webhook server owns the signals: on SIGTERM it drains
its requests first, and only then stops the probe listener, so liveness keeps answering while
the replica shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from promoter.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` now, before anything runs: a port already taken fails
    the start with a clear error (uvicorn would exit from inside the event loop instead)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} for probes: {exc.strerror}",
                        hint="choose another --probe-port (server.probe_port)") from None
    return sock


class ProbeServer(uvicorn.Server):
    """A uvicorn server on an already bound socket, leaving the signals to the webhook server
    that runs it."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        super().__init__(config)
        self.socket = sock

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets or [self.socket])


class WebhookServer(uvicorn.Server):
    """The webhook listener, running ``probes`` (if any) beside it in its event loop."""

    def __init__(self, config: uvicorn.Config, probes: ProbeServer | None = None) -> None:
        super().__init__(config)
        self.probes = probes

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self.probes is None:
            await super().serve(sockets)
            return
        probes = asyncio.create_task(self.probes.serve())
        try:
            await super().serve(sockets)
        finally:
            self.probes.should_exit = True
            await probes
