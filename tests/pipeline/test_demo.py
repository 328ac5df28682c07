"""`promoter demo` on a fresh state directory, as the README's first command: its output names
the merge request and the signed image digest; `promoter mr approve|merge` finish the loop and
MLflow shows the version merged; `promoter demo --stop` leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import pytest

from tests.fixtures.stack import mlflow_client, run_promoter, wait_for

pytestmark = pytest.mark.e2e
DEMO_MODEL = "Demo Fraud Detector"


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line mentions ``text`` (the demo's state directory)."""
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # ended while we looked
        if text in command and "State:\tZ" not in status:
            found.append(f"{pid}: {command}")
    return found


@pytest.mark.skipif(shutil.which("docker-registry") is None,
                    reason="without docker-registry the demo writes an OCI layout and has no "
                           "registry to verify a signature in (make install-system installs it)")
def test_demo_runs_the_whole_loop_on_a_fresh_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PROMOTER_", "MLFLOW_", "COSIGN_"))}
    env["PROMOTER_STATE_DIR"] = str(state)
    try:
        demo = run_promoter("demo", env=env, timeout=900)
        out = demo.stdout
        assert demo.returncode == 0, out + demo.stderr
        assert "Traceback" not in out + demo.stderr
        mr = re.search(r"^merge request !(\d+): (.+) \[opened\]$", out, re.MULTILINE)
        assert mr, out
        assert f"{DEMO_MODEL} version" in mr.group(2)
        image = re.search(r"^image: +(\S+@sha256:[0-9a-f]{64})$", out, re.MULTILINE)
        assert image, out
        assert re.search(r"^signature: verified \(.+\) with .+cosign\.pub$", out, re.MULTILINE)
        assert "+++ b/manifests/" in out  # the rendered diff is shown
        assert "promoter.production.status=mr_opened" in out
        mlflow_url = re.search(r"^MLflow server: +(http://127\.0\.0\.1:\d+)$", out,
                               re.MULTILINE)
        version = re.search(rf"^model: +'{DEMO_MODEL}' version (\d+) ", out, re.MULTILINE)
        assert mlflow_url and version, out

        config = state / "demo" / "promoter.yaml"
        for verb in ("approve", "merge"):
            done = run_promoter("--config", str(config), "mr", verb, mr.group(1), env=env)
            assert done.returncode == 0, done.stdout + done.stderr
        client = mlflow_client(mlflow_url.group(1))
        tags = client.get_model_version(DEMO_MODEL, version.group(1)).tags
        assert tags["promoter.production.status"] == "merged"
        assert tags["promoter.production.image"] == image.group(1)
        shown = run_promoter("--config", str(config), "mr", "show", mr.group(1),
                             "--output", "json", env=env)
        assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "merged"
        # Run again: everything is reused, and no command that would now fail is offered.
        again = run_promoter("demo", env=env, timeout=900)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"merge request !{mr.group(1)} is merged: the loop is finished" in again.stdout
        assert "finish the loop" not in again.stdout and " mr approve " not in again.stdout
    finally:
        stopped = run_promoter("demo", "--stop", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_for(lambda: not processes_mentioning(str(state)), 30,
             "every demo process to end", interval=0.3)


def crash_services(state: Path) -> None:
    """SIGKILL every process of the demo's state directory with its whole process group, as a
    power cut would (each service is a session of its own; MLflow's job consumers, whose
    command lines do not name the directory, would otherwise live on as orphans), and wait
    until every thread of them has ended. A killed process's leader turns zombie (and its
    command line empties) while its other threads still exit, and its sockets close only with
    the last of them: the old ports are free once this returns."""
    named = [int(entry.split(":", 1)[0]) for entry in processes_mentioning(str(state))]
    groups = {group for group in map(process_group, named) if group} - {os.getpgrp()}
    killed = named + [pid for pid in all_pids() if process_group(pid) in groups]
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    for pid in named:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(has_live_threads(pid) for pid in killed), 30,
             "the services to die", interval=0.3)


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def process_group(pid: int) -> int | None:
    """The process group of ``pid`` (field 5 of /proc/PID/stat), None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def has_live_threads(pid: int) -> bool:
    """Whether any thread of ``pid`` is still running (not a zombie, not gone)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False  # reaped
    for task in tasks:
        try:
            if "State:\tZ" not in (task / "status").read_text():
                return True
        except OSError:
            continue  # ended while we looked
    return False


def _field(pattern: str, out: str) -> str:
    found = re.search(pattern, out, re.MULTILINE)
    assert found, f"{pattern!r} not in:\n{out}"
    return found.group(1)


@pytest.mark.skipif(shutil.which("docker-registry") is None,
                    reason="the re-run cases are about the registry's address (docker-registry)")
@pytest.mark.timeout(1800)
def test_demo_runs_again_after_stop_and_when_its_old_registry_port_is_taken(
        tmp_path: Path) -> None:
    """The issue's report: after `--stop`, a second `promoter demo` failed with exit 3 because
    the services came back on new ports while the job, tags and tree named the old ones.
    Then a reboot (services killed, their records left behind) with the old registry port
    taken by another process."""
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PROMOTER_", "MLFLOW_", "COSIGN_"))}
    env["PROMOTER_STATE_DIR"] = str(state)
    verified = r"^signature: verified \(.+\) with .+cosign\.pub$"
    try:
        first = run_promoter("demo", env=env, timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        mr = _field(r"^merge request !(\d+): .+ \[opened\]$", first.stdout)
        registry = _field(r"^OCI registry: +http://(127\.0\.0\.1:\d+)$", first.stdout)
        image = _field(r"^image: +(\S+@sha256:[0-9a-f]{64})$", first.stdout)
        assert image.startswith(f"{registry}/models/")

        assert run_promoter("demo", "--stop", env=env, timeout=120).returncode == 0
        second = run_promoter("demo", env=env, timeout=900)
        out = second.stdout
        assert second.returncode == 0, out + second.stderr
        assert _field(r"^OCI registry: +http://(127\.0\.0\.1:\d+)", out) == registry
        assert "registered by an earlier run" in out
        assert "an earlier run (reused)" in out
        assert _field(r"^merge request !(\d+): .+ \[opened\]$", out) == mr
        assert _field(r"^image: +(\S+)$", out) == image
        assert re.search(verified, out, re.MULTILINE), out

        # On a healthy stack: every service reused; --output json is JSON and nothing else.
        third = run_promoter("demo", "--output", "json", env=env, timeout=600)
        assert third.returncode == 0, third.stdout + third.stderr
        shown = json.loads(third.stdout)
        assert shown["reused"] == ["mlflow", "registry", "serve", "model", "job"]
        assert shown["mr"]["iid"] == int(mr) and shown["image"] == image
        assert shown["signature"].startswith("verified")

        # A reboot: every service dies at once and no `--stop` tidies its records.
        crash_services(state)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            # The stopped registry's connections may linger in TIME_WAIT; a listener with
            # SO_REUSEADDR still takes the port from everyone else.
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", int(registry.rsplit(":", 1)[1])))
            squatter.listen()
            fourth = run_promoter("demo", env=env, timeout=900)
        out = fourth.stdout
        assert fourth.returncode == 0, out + fourth.stderr
        assert "Traceback" not in out + fourth.stderr
        moved = _field(r"^OCI registry: +http://(127\.0\.0\.1:\d+)", out)
        assert moved != registry
        assert re.search(rf"^moved: +registry: port {registry.rsplit(':', 1)[1]} is taken",
                         out, re.MULTILINE), out
        new_image = _field(r"^image: +(\S+@sha256:[0-9a-f]{64})$", out)
        assert new_image.startswith(f"{moved}/models/"), out
        assert re.search(verified, out, re.MULTILINE), out
        assert _field(r"^merge request !(\d+): .+ \[opened\]$", out) == mr
        mlflow_url = _field(r"^MLflow server: +(http://127\.0\.0\.1:\d+)", out)
        version = _field(rf"^model: +'{DEMO_MODEL}' version (\d+) ", out)
        tags = mlflow_client(mlflow_url).get_model_version(DEMO_MODEL, version).tags
        assert tags["promoter.production.image"] == new_image
    finally:
        reset = run_promoter("demo", "--reset", "--yes", env=env, timeout=120)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert not (state / "demo").exists()
    wait_for(lambda: not processes_mentioning(str(state)), 30,
             "every demo process to end", interval=0.3)
