"""`promoter demo` on a fresh state directory, as the README's first command: its output names
the merge request and the signed image digest; `promoter mr approve|merge` finish the loop and
MLflow shows the version merged; `promoter demo --stop` leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.fixtures.stack import mlflow_client, run_promoter, wait_for

pytestmark = pytest.mark.e2e
DEMO_MODEL = "Demo Fraud Detector"


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line mentions ``text`` (the demo's state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except OSError:
            continue  # ended while we looked
        if text in command and "State:\tZ" not in status:
            found.append(f"{entry.name}: {command}")
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
    finally:
        stopped = run_promoter("demo", "--stop", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_for(lambda: not processes_mentioning(str(state)), 30,
             "every demo process to end", interval=0.3)
