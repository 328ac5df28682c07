"""The uvicorn configuration of ``promoter serve``: limits that keep slow or hostile clients
from holding the listener.

uvicorn's h11 protocol has a keep-alive timeout only *between* requests, and receiving any byte
cancels it: a client that opens a connection and sends nothing, or sends headers (or a body) a
byte at a time, is kept forever. ``DeadlineH11Protocol`` gives every request a deadline: its
headers and body must have arrived ``server.request_timeout_seconds`` after the connection
opened or the previous response was sent, or the connection is closed. ``server.max_connections``
caps open connections (above it, requests are answered 503 by uvicorn), and
``server.max_header_bytes`` bounds the request line and headers (above it, h11 answers 400).

The cap answers every path, /healthz too: under a connection flood a kubelet probing the
webhook port would restart a healthy replica. ``server.probe_port`` opens a second listener
(``probe_config``) for /healthz, /readyz and /metrics only, with a cap of its own; /metrics
then leaves the webhook listener (``without_metrics``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from promoter.server_settings import ServerSettings

_INCOMPLETE = (h11.IDLE, h11.SEND_BODY)  # the client has not finished sending its request
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Kubelets probe one at a time and Prometheus scrapes a few at once: a small cap of its own
# keeps a flood of the probe port from costing more than this many connections.
PROBE_MAX_CONNECTIONS = 32


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request's headers and body."""

    request_timeout: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_deadline()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.request_timeout, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.conn.their_state in _INCOMPLETE and not self.transport.is_closing():
            # Headers or body still incomplete: nothing was acknowledged, the sender retries.
            self.logger.warning("closing a connection whose request did not arrive within "
                                "%.0f s", self.request_timeout)
            self.transport.close()  # connection_lost tells a waiting app it disconnected


def protocol_class(request_timeout: float) -> type[DeadlineH11Protocol]:
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,),
                {"request_timeout": float(request_timeout)})


def server_config(app: Any, server: ServerSettings, host: str, port: int) -> uvicorn.Config:
    """The uvicorn.Config ``promoter serve`` runs with (tests start the same one)."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=10, http=protocol_class(server.request_timeout_seconds),
        timeout_keep_alive=server.keep_alive_seconds,
        # uvicorn counts the connection asking, too: +1 serves exactly max_connections.
        limit_concurrency=server.max_connections + 1,
        h11_max_incomplete_event_size=server.max_header_bytes)


def probe_app(app: Starlette) -> Starlette:
    """The probe listener's app: the webhook app's own /healthz, /readyz and /metrics handlers
    (same queue, same metrics), and nothing else: webhooks on this port are 404."""
    return _routes_of(app, lambda path: path in PROBE_PATHS)


def without_metrics(app: Starlette) -> Starlette:
    """The webhook listener's app once a probe listener serves /metrics: everything but
    /metrics. The webhook port is open to MLflow, the Ingress and Argo CD's notifications
    controller (the NetworkPolicy), and /metrics has no authentication: on the probe port
    only, which the policy opens to Prometheus alone, it stays in."""
    return _routes_of(app, lambda path: path != "/metrics")


def _routes_of(app: Starlette, keep: Callable[[str], bool]) -> Starlette:
    """A new app serving ``app``'s routes whose path ``keep`` accepts, with the same handlers
    and error answers, and no slash redirects."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    routes = [route for route in app.routes if isinstance(route, Route) and keep(route.path)]
    kept = Starlette(routes=routes, exception_handlers=app.exception_handlers)
    kept.router.redirect_slashes = False
    return kept


def probe_config(app: Starlette, server: ServerSettings, sock: socket.socket) -> uvicorn.Config:
    """The probe listener's uvicorn.Config: ``app``'s probe routes on the bound ``sock``, with
    the same request deadline and header limit as the webhook listener and a cap of its own."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    return uvicorn.Config(
        probe_app(app), host=host, port=port, log_config=None, access_log=False,
        lifespan="off", timeout_graceful_shutdown=1,
        http=protocol_class(server.request_timeout_seconds),
        timeout_keep_alive=server.keep_alive_seconds,
        limit_concurrency=PROBE_MAX_CONNECTIONS + 1,
        h11_max_incomplete_event_size=server.max_header_bytes)
