"""The demo's services keep their ports: a recorded port is taken again while it is free, even
right after its server stopped (TIME_WAIT), and only a process listening on it moves it."""

from __future__ import annotations

import socket
import threading

from promoter.service.composition import free_port


def test_a_free_preferred_port_is_kept() -> None:
    port = free_port()
    assert free_port(port) == port


def test_a_port_with_connections_in_time_wait_is_still_free() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    thread.start()
    client = socket.create_connection(("127.0.0.1", port))
    thread.join(5)
    accepted[0].close()  # the server side closes first: its end goes to TIME_WAIT
    client.close()
    server.close()
    assert free_port(port) == port


def test_a_port_someone_listens_on_moves() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        moved = free_port(taken)
    assert moved != taken and moved > 0
