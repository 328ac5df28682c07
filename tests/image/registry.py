"""A real CNCF distribution registry (Debian's docker-registry) on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (make install-system installs it)")
    return binary


def _start(workdir: Path, extra_config: str, binary: str | None
           ) -> tuple[subprocess.Popen[bytes], str]:
    """Start one registry process on a fresh free port."""
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}, "
        "delete: {enabled: true}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n" + extra_config, encoding="utf-8")
    with (workdir / "registry.log").open("ab") as log:
        process = subprocess.Popen([binary or _binary(), "serve", str(config)], stdout=log,
                                   stderr=log)
    return process, f"127.0.0.1:{port}"


def _ready(process: subprocess.Popen[bytes], address: str) -> bool:
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{address}/v2/", timeout=1).status_code in (200, 401):
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_registry(workdir: Path, extra_config: str = "") -> Iterator[str]:
    """Start a registry with its own config; yields ``127.0.0.1:<port>``."""
    with registry_process(workdir, extra_config) as (_process, address):
        yield address


@contextmanager
def registry_process(workdir: Path, extra_config: str = "", *, binary: str | None = None
                     ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The running registry process and its ``127.0.0.1:<port>`` (a benchmark reads its CPU
    time; ``binary`` runs another build of the registry than the one on PATH). A port grabbed
    by someone else between choosing and binding it costs one more attempt (at most three)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        process, address = _start(workdir, extra_config, binary)
        if _ready(process, address):
            break
        _stop(process)
    else:
        raise RuntimeError("registry did not start:\n"
                           + (workdir / "registry.log").read_text(errors="replace")[-3000:])
    try:
        yield process, address
    finally:
        _stop(process)
