"""Every documented exit code, seen from a real `python -m promoter` process, as a shell sees it.

README "Commands": 0 ok, 1 user error, 2 usage, 3 unexpected or left for retry, 4 policy
denied, 130 interrupted. In-process runners catch SystemExit themselves and can hide a code the
real entry point loses (typer.Exit(4) used to end as exit 0), so these run subprocesses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli_runner
from tests.fixtures.mlflow_server import MlflowServer, silent_server
from tests.fixtures.stack import (
    mlflow_client,
    promoter_environ,
    register_model_version,
    run_promoter,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
INTENT = str(ROOT / "examples" / "llm-chat.yaml")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return promoter_environ(PROMOTER_STATE_DIR=str(tmp_path / "state"), COSIGN_PASSWORD="pw")


# (arguments, expected exit code, what stderr must say); {tmp} is the test's tmp_path.
CASES = [
    (["--version"], 0, ""),
    (["render", "--intent", INTENT, "--env", "production", "--dry-run"], 0, ""),
    (["render", "--intent", "/nonexistent.yaml", "--env", "production", "--dry-run"], 1,
     "cannot read intent file"),
    (["render", "--intent", INTENT, "--env", "nope", "--dry-run"], 1, "unknown environment"),
    (["render", "--intent", INTENT, "--env", "production"], 2, "exactly one of"),
    (["render", "--dry-run"], 2, "Missing option"),
    (["no-such-command"], 2, "No such command"),
    (["validate", "/nonexistent"], 1, "not a directory"),
    (["jobs", "list"], 0, ""),
    (["jobs", "show", "999"], 1, "no job with id 999"),
    (["jobs", "retry", "999"], 1, "no job with id 999"),
    (["jobs", "list", "--limit", "many"], 2, "Invalid value"),
    (["jobs", "list", "--state", "bogus"], 2, "not one of queued, running"),
    (["mr", "list"], 0, ""),
    (["mr", "show", "99"], 1, "does not exist"),
    (["mr", "merge", "not-a-number"], 2, "Invalid value"),
    (["keys", "generate", "--out", "{tmp}/cosign"], 0, ""),
    (["image", "verify", "r@sha256:00"], 2, "needs --key"),
    (["image", "sign", "r@sha256:00"], 2, "needs --key"),
    (["hooks", "list"], 1, "no MLflow tracking URI"),
    (["reconcile", "--once"], 1, "no MLflow tracking URI"),
    (["promote", "m", "--version", "1", "--env", "staging"], 1, "no tracking URI"),
    (["serve", "--port", "abc"], 2, "Invalid value"),
    (["demo", "--bogus"], 2, "No such option"),
    (["demo", "--yes"], 2, "--yes confirms --reset"),
    (["image"], 2, ""),  # a group without a command: its help, as a usage error
    (["image", "build", "{tmp}"], 2, "say where the image goes"),
    (["image", "build", "{tmp}", "--oci-layout", "{tmp}/layout"], 1,
     "not an MLflow model directory"),
    (["image", "build", "{tmp}", "-r", "localhost:5000/m", "--oci-layout", "{tmp}/layout"], 2,
     "not both"),
    (["image", "modelcar", "{tmp}", "-r", "localhost:5000/m", "--oci-layout", "{tmp}/l"], 2,
     "not both"),
    (["hooks", "register"], 1, "no MLflow tracking URI"),
    (["keys", "generate", "--out", "/etc/passwd/x"], 1, "Not a directory"),
]


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_documented_exit_codes(args: list[str], code: int, says: str, env: dict[str, str],
                               tmp_path: Path) -> None:
    result = run_promoter(*[a.replace("{tmp}", str(tmp_path)) for a in args], env=env,
                          timeout=120)
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stderr
    assert "unexpected error" not in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def silent_mlflow() -> Iterator[str]:
    with silent_server() as url:
        yield url


def test_promote_left_for_retry_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    """MLflow unreachable: a transient failure, so the job is left `retrying` → exit 3."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=f"http://127.0.0.1:{port}")
    result = run_promoter("promote", "m", "--version", "1", "--env", "staging", env=env,
                          config=config, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "will be retried" in result.stderr
    jobs = run_promoter("jobs", "list", "--output", "json", env=env, config=config)
    assert '"retrying"' in jobs.stdout


def test_interrupted_promote_exits_130(env: dict[str, str], tmp_path: Path,
                                       silent_mlflow: str) -> None:
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=silent_mlflow)
    process = subprocess.Popen(
        [sys.executable, "-m", "promoter", "--config", str(config), "promote", "m",
         "--version", "1", "--env", "staging"],
        env={**env, "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the job exists; the worker now waits on MLflow
        assert first.startswith("job "), first
        os.kill(process.pid, signal.SIGINT)
        # communicate, not wait: the pipes are drained, so a chatty child cannot block on a
        # full stderr pipe and look hung.
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr


SWALLOWS_INTERRUPTS = """
import sys, time
from promoter import cli
cli.INTERRUPT_GRACE_SECONDS = float(sys.argv[1])
cli._arm_interrupt_watchdog()
for step in range(600):       # code that catches KeyboardInterrupt (a library's bare except)
    try:
        if step == 0:         # inside the try: a Ctrl-C sent on "ready" cannot land outside it
            print("ready", flush=True)
        time.sleep(0.1)
    except KeyboardInterrupt:
        pass
"""


@pytest.mark.parametrize(("grace", "interrupts"), [(0.5, 1), (60.0, 2)])
def test_ctrl_c_ends_the_command_even_where_the_interrupt_is_swallowed(
        env: dict[str, str], grace: float, interrupts: int) -> None:
    """The first Ctrl-C ends the process after the grace period at the latest, a second one
    at once: a CLI that ignores Ctrl-C is what the full suite once saw (a promote waiting on
    MLflow that did not stop)."""
    process = subprocess.Popen([sys.executable, "-c", SWALLOWS_INTERRUPTS, str(grace)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for _ in range(interrupts):
            os.kill(process.pid, signal.SIGINT)
            time.sleep(0.2)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 130 and stderr == "interrupted\n"


@pytest.mark.e2e
def test_promote_denied_by_policy_exits_4(mlflow_server: MlflowServer, env: dict[str, str],
                                          tmp_path: Path) -> None:
    """A real MLflow version without the tag the policy requires: `done (denied)` → exit 4."""
    model, url = "exit-code-denied", mlflow_server.url
    version = register_model_version(url, model, tags={"validation_status": ""})
    mlflow_client(url).set_registered_model_alias(model, "staging", version)
    config = write_config(tmp_path / "promoter.yaml", state_dir=tmp_path / "state",
                          mlflow_url=url)
    result = run_promoter("promote", model, "--version", version, "--env", "staging", env=env,
                          config=config)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "denied by policy" in result.stdout and "validation_status" in result.stdout


@pytest.mark.parametrize("command", ["show", "retry"])
def test_a_job_id_past_64_bits_is_a_usage_error(command: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """On SQLite it crashed (OverflowError, exit 3: "report it")."""
    config = tmp_path / "promoter.yaml"
    config.write_text(f'state_dir: "{tmp_path / "state"}"\n')
    code, _, err = cli_runner(capsys)("--config", str(config), "jobs", command,
                                      "99999999999999999999")
    assert code == 2 and "job_id" in err and "9223372036854775807" in err
