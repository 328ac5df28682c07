"""Detached background services (the demo's MLflow, OCI registry and `promoter serve`).

Each runs detached (its own session, so it outlives the `promoter demo` command and a Ctrl-C
of it), writes its log next to a pid file under ``<state_dir>/demo/``, and is found again by
the next run through that pid file and its health URL. ``promoter demo --stop`` ends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from promoter.errors import UserError


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens on it (nor holds it), else any free loopback port."""
    for port in ((preferred, 0) if preferred else (0,)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Connections of a stopped server linger in TIME_WAIT; the servers themselves bind
            # with SO_REUSEADDR, so only a listener (or a bound socket) makes a port taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: fall back to one the system picks
            return int(sock.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


@dataclass(frozen=True)
class Service:
    name: str
    directory: Path

    @property
    def record(self) -> Path:
        return self.directory / f"{self.name}.json"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def running(self) -> dict[str, object] | None:
        """The recorded {pid, port, url} if that process is alive and healthy, else None."""
        try:
            info = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        if not _alive(int(info["pid"])) or not _healthy(str(info["health"])):
            return None
        return dict(info)

    def start(self, command: Sequence[str], *, port: int, health: str,
              env: Mapping[str, str] | None = None, timeout: float = 180) -> dict[str, object]:
        found = self.running()
        if found is not None:
            return found
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            process = subprocess.Popen(list(command), cwd=self.directory, stdout=sink,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=dict(env if env is not None else os.environ),
                                       start_new_session=True)
        info: dict[str, object] = {"pid": process.pid, "port": port, "health": health,
                                   "url": f"http://127.0.0.1:{port}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UserError(f"{self.name} exited with code {process.returncode} while "
                                f"starting; see {self.log}")
            if _healthy(health):
                self.record.write_text(json.dumps(info))
                return info
            time.sleep(0.3)
        self.stop_pid(process.pid)
        raise UserError(f"{self.name} did not become healthy within {timeout:.0f} s; "
                        f"see {self.log}")

    def stop(self) -> bool:
        try:
            info = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return False
        self.record.unlink(missing_ok=True)
        return self.stop_pid(int(info["pid"]))

    @staticmethod
    def stop_pid(pid: int) -> bool:
        if not _alive(pid):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback only)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
