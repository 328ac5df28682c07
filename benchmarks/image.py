"""Image benchmark: build+push of a model with a large random weights file (1 GiB by default).

Prints, for one run against a real `docker-registry` on a free loopback port:
- `promoter image build` wall time and peak RSS (a fresh process, measured with wait4),
- `skopeo copy --preserve-digests` of the same image from an `oci:` layout into an empty
  repository of the same registry (pure blob copy, no recompression), and the ratio,
- rebuild wall time and bytes uploaded.
Targets: ratio <= 1.0, peak RSS <= 150 MiB whatever the size, rebuild uploads 0 bytes.
Not a test: it prints figures, it does not judge them. Usage: python benchmarks/image.py
[--size-mib N]  (needs docker-registry and skopeo; uses ~3x the size in temporary disk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.image.registry import running_registry  # noqa: E402

TIMEOUT = 1800  # seconds: every child process is bounded


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        deadline = started + TIMEOUT
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                raise SystemExit(f"timed out: {command}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({process.returncode}):\n{stderr[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, stdout


def make_model(directory: Path, size_mib: int) -> None:
    directory.mkdir(parents=True)
    (directory / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        "    python_model: python_model.pkl\n")
    (directory / "requirements.txt").write_text("")  # no dependency layer: measure the model
    with (directory / "weights.bin").open("wb") as handle:
        for _ in range(size_mib):
            handle.write(os.urandom(1024 * 1024))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise SystemExit("skopeo is needed (make install-system)")
    with tempfile.TemporaryDirectory(prefix="promoter-bench-") as scratch:
        work = Path(scratch)
        make_model(work / "model", args.size_mib)
        env = {**os.environ, "PROMOTER_STATE_DIR": str(work / "state")}
        env.pop("PROMOTER_CONFIG", None)
        promoter = [sys.executable, "-m", "promoter", "image", "build", str(work / "model")]
        with running_registry(work / "registry") as registry:
            build_s, build_rss, out = run_measured(
                [*promoter, "--repository", f"{registry}/bench/promoter", "--output", "json"],
                env)
            built = json.loads(out)
            rebuild_s, rebuild_rss, out = run_measured(
                [*promoter, "--repository", f"{registry}/bench/promoter", "--output", "json"],
                env)
            rebuilt = json.loads(out)
            run_measured([*promoter, "--oci-layout", str(work / "layout"), "--output", "json"],
                         env)
            copy_s, copy_rss, _ = run_measured(
                [skopeo, "copy", "--preserve-digests", "--dest-tls-verify=false",
                 f"oci:{work / 'layout'}:latest", f"docker://{registry}/bench/skopeo:latest"],
                env)
    size = built["size"] / 2**20
    print(f"model: {args.size_mib} MiB random weights; image {size:.0f} MiB, "
          f"{len(built['layers'])} layer(s); digest {built['digest']}")
    print(f"promoter build+push : {build_s:7.2f} s   peak RSS {build_rss:6.1f} MiB   "
          f"uploaded {built['bytes_uploaded'] / 2**20:.0f} MiB")
    print(f"skopeo copy (oci:)  : {copy_s:7.2f} s   peak RSS {copy_rss:6.1f} MiB")
    print(f"ratio promoter/skopeo: {build_s / copy_s:.2f}  (target <= 1.0)")
    print(f"rebuild             : {rebuild_s:7.2f} s   peak RSS {rebuild_rss:6.1f} MiB   "
          f"uploaded {rebuilt['bytes_uploaded']} bytes; same digest: "
          f"{rebuilt['digest'] == built['digest']}")


if __name__ == "__main__":
    main()
