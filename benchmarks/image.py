"""Image benchmark: build+push of a model with a large random weights file (1 GiB by default).

Two cases (``--case pyfunc|modelcar|all``, default all), each in one run against a real
`docker-registry` on a free loopback port:
- pyfunc: `promoter image build` of an MLflow model directory (the serving image);
- modelcar: `promoter image modelcar --runtime vllm` of a Hugging Face directory (config.json
  and one valid safetensors file holding the weights), the image KServe/vLLM pull.
For each: wall time and peak RSS of the build+push in a fresh process (measured with wait4);
the same build inside an already warm promoter process, as `promoter serve`'s worker runs it
(benchmarks/warm_build.py; a fresh registry, so it uploads everything again); `skopeo copy
--preserve-digests` of the same image from an `oci:` layout into an empty repository of the
registry (pure blob copy, no recompression), first and last in the run, their mean the
baseline of the ratios; then the rebuild's wall time and bytes uploaded. Every timed push
goes into a registry process of its own.
promoter's modules are byte-compiled first (``compileall``, into the checkout's gitignored
__pycache__), as `pip install` does for an installed promoter and its container image: a fresh
process then measures promoter's start-up, not the compilation of its sources, which an
editable checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise repeat every time
(about 0.3 s here).
Also the registry's own CPU seconds while each push ran (from /proc): receiving, hashing and
writing the bytes costs the registry about the same whoever sends them, so ``registry CPU of our
push / skopeo's wall time`` is a lower bound for any client's ratio against this registry. The
bare upload (benchmarks/bare_upload.py: the layer's bytes already in memory and hashed, one
PATCH written straight to the socket) times a client that does nothing but send: promoter's
push near it has no client-side cost left to cut.
On this VM the same push, back to back, took 3.8 s first and 5.6 s a minute later (the
registry's CPU seconds for the same bytes rose alike) as the page cache grew into untouched
guest memory, so a fixed order decided ratios by 0.1-0.4. So each timed push starts from a
settled page cache (see settle(): synced, dropped when run as root, its sources read back),
in a fresh registry, with skopeo at both ends of the run.
The registry's and skopeo's Go toolchains are printed: Go >= 1.21 hashes SHA-256 with the CPU's
SHA instructions, older ones at a third of the speed, which decides who is the bottleneck.
``--registry-binary`` and ``--skopeo`` run other builds of either: `make bench-image-debian13`
fetches Debian 13's (benchmarks/debian13_tools.sh, nothing installed) and runs the modelcar
case against them.
Targets: pyfunc ratio <= 1.0, modelcar ratio <= 0.8, peak RSS <= 150 MiB whatever the size,
rebuild uploads 0 bytes. Not a test: it prints figures, it does not judge them.
Usage: python benchmarks/image.py [--size-mib N] [--case C] [--runs N]
       [--registry-binary PATH] [--skopeo PATH]
(needs docker-registry and skopeo; uses ~3x the size in temporary disk per case).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.image.registry import registry_process  # noqa: E402

TIMEOUT = 1800  # seconds: every child process is bounded


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one child process. Dirty pages left by the
    previous step are flushed first, so no step pays for another's disk writes."""
    os.sync()
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_model(directory: Path, size_mib: int) -> None:
    directory.mkdir(parents=True)
    (directory / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        "    python_model: python_model.pkl\n")
    (directory / "requirements.txt").write_text("")  # no dependency layer: measure the model
    with (directory / "weights.bin").open("wb") as handle:
        for _ in range(size_mib):
            handle.write(os.urandom(1024 * 1024))


def make_hf_model(directory: Path, size_mib: int) -> None:
    """config.json + one valid safetensors file: a U8 tensor of ``size_mib`` random MiB."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama", "hidden_size": 16}')
    size = size_mib * 1024 * 1024
    header = json.dumps({"weights": {"dtype": "U8", "shape": [size],
                                     "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    with (directory / "model.safetensors").open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        for _ in range(size_mib):
            handle.write(os.urandom(1024 * 1024))


def go_toolchain(binary: str) -> str:
    """The Go release a binary was built with (Go stamps it into every binary), or "?". For a
    wrapper script (benchmarks/debian13_tools.sh writes one for skopeo), the last executable
    file it names."""
    try:
        data = Path(binary).read_bytes()
    except OSError:
        return "?"
    if data.startswith(b"#!"):
        named = re.findall(r"/[^\s\"']+", data[2:].decode(errors="replace"))
        elfs = [path for path in map(Path, named) if _is_elf(path)]
        return go_toolchain(str(elfs[-1])) if elfs else "?"
    found = re.search(rb"go1\.[0-9]+(\.[0-9]+)?", data)
    return found.group().decode() if found else "?"


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def describe(binary: str) -> str:
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
    return f"{version} (built with {go_toolchain(shutil.which(binary) or binary)})"


@dataclass(frozen=True)
class Tools:
    registry: str
    skopeo: str


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--case", choices=["pyfunc", "modelcar", "all"], default="all")
    parser.add_argument("--runs", type=int, default=1, help="repeat each case (noisy hosts)")
    parser.add_argument("--registry-binary", default=shutil.which("docker-registry"),
                        help="the distribution registry to run (default: docker-registry)")
    parser.add_argument("--skopeo", default=shutil.which("skopeo"),
                        help="the skopeo to compare with (default: skopeo)")
    args = parser.parse_args()
    if args.skopeo is None or args.registry_binary is None:
        raise SystemExit("docker-registry and skopeo are needed (make install-system)")
    tools = Tools(args.registry_binary, args.skopeo)
    print(f"registry: {describe(tools.registry)}")
    print(f"skopeo  : {describe(tools.skopeo)}")
    byte_compile()
    for case in ("pyfunc", "modelcar") if args.case == "all" else (args.case,):
        ratios = [bench(case, args.size_mib, tools) for _ in range(args.runs)]
        if len(ratios) > 1:
            for kind in ratios[0]:
                print(f"[{case}] {kind} ratios over {len(ratios)} runs: "
                      f"{', '.join(f'{r[kind]:.2f}' for r in ratios)}; median "
                      f"{statistics.median(r[kind] for r in ratios):.2f}")


def byte_compile() -> None:
    """Compile promoter's sources to bytecode as an install would (see the module doc)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "promoter")],
                   check=True, stdout=subprocess.DEVNULL, timeout=TIMEOUT)
    print("promoter: byte-compiled (as installed by pip)")


@dataclass(frozen=True)
class Push:
    """One timed push into a registry of its own."""
    seconds: float
    rss_mib: float
    registry_cpu: float
    output: str


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def settle(sources: list[Path]) -> None:
    """Put the page cache in the same state before every timed push: dirty pages written,
    the cache dropped (as root), then only the push's sources read back in, as a build server
    holds a model it just downloaded.

    Without it, this VM's page cache grew by ~1 GiB per push, and once it had taken the
    memory freed earlier, every new page cost a first touch of guest memory: the same skopeo
    copy took 3.8 s twice, then 4.8, 5.6, 5.7 and 5.6 s (registry CPU 2.9 s to 5.3 s), so
    whatever ran later in a run lost. With the drop the six copies took 4.1-4.6 s (registry
    CPU 2.9-3.1 s)."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return  # not root: the figures drift with the run's order (skopeo at both ends)
    for source in sources:
        for path in sorted(source.rglob("*")) if source.is_dir() else [source]:
            if path.is_file():
                with path.open("rb") as handle:
                    while handle.read(4 * 1024 * 1024):
                        pass


def naming(command: list[str], registry: str) -> list[str]:
    """``command`` with ``{registry}`` filled in (each push's registry has its own port)."""
    return [part.replace("{registry}", registry) for part in command]


def timed_push(work: Path, name: str, command: list[str], env: dict[str, str],
               tools: Tools, sources: list[Path]) -> Push:
    """Run ``command`` (it names the registry as ``{registry}``) against a fresh registry
    process: no push meets blobs, upload sessions or a store that an earlier one left (skopeo
    would mount blobs it pushed before instead of sending them). The page cache is settled
    first, holding ``sources``."""
    with registry_process(work / f"registry-{name}", binary=tools.registry) as (process,
                                                                                registry):
        settle(sources)
        before = cpu_seconds(process.pid)
        seconds, rss, out = run_measured(naming(command, registry), env)
        return Push(seconds, rss, cpu_seconds(process.pid) - before, out)


def bench(case: str, size_mib: int, tools: Tools) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="promoter-bench-") as scratch:
        work = Path(scratch)
        env = {**os.environ, "PROMOTER_STATE_DIR": str(work / "state")}
        env.pop("PROMOTER_CONFIG", None)
        if case == "modelcar":
            make_hf_model(work / "model", size_mib)
            make_hf_model(work / "warmup", 1)
            promoter = [sys.executable, "-m", "promoter", "image", "modelcar",
                        str(work / "model"), "--runtime", "vllm"]
            tag = "modelcar"
        else:
            make_model(work / "model", size_mib)
            make_model(work / "warmup", 1)
            promoter = [sys.executable, "-m", "promoter", "image", "build", str(work / "model")]
            tag = "latest"
        # The layout skopeo copies from, exported by promoter with a state directory of its
        # own (nothing it caches helps the timed builds).
        run_measured([*promoter, "--oci-layout", str(work / "layout"), "--output", "json"],
                     {**env, "PROMOTER_STATE_DIR": str(work / "state-layout")})
        skopeo = [tools.skopeo, "copy", "--preserve-digests", "--dest-tls-verify=false",
                  f"oci:{work / 'layout'}:{tag}", f"docker://{{registry}}/bench/skopeo:{tag}"]
        push = [*promoter, "--repository", "{registry}/bench/promoter", "--output", "json"]
        # Order skopeo, promoter, bare, warm, skopeo, and the baseline is the mean of skopeo's
        # first and last push: should the host drift within a run all the same (settle()
        # needs root), no side gains from its place.
        layout, model = [work / "layout"], [work / "model"]
        copy_first = timed_push(work, "skopeo-first", skopeo, env, tools, layout)
        build = timed_push(work, "promoter", push, env, tools, model)
        built = json.loads(build.output)
        bare_push = timed_push(work, "bare", [
            sys.executable, str(ROOT / "benchmarks" / "bare_upload.py"), str(work / "layout"),
            "{registry}/bench/bare"], env, tools, layout)
        bare = json.loads(bare_push.output)
        # A fresh registry and state directory: nothing of the first push can be reused.
        warm = json.loads(timed_push(work, "warm", [
            sys.executable, str(ROOT / "benchmarks" / "warm_build.py"), case,
            str(work / "model"), str(work / "warmup"), "{registry}/bench/promoter"],
            {**env, "PROMOTER_STATE_DIR": str(work / "state-warm")}, tools,
            [*model, work / "warmup"]).output)
        copy_last = timed_push(work, "skopeo-last", skopeo, env, tools, layout)
        # The rebuild: the same image again into a registry that holds it.
        with registry_process(work / "registry-rebuild", binary=tools.registry) as (_, registry):
            again = naming(push, registry)
            rebuild_env = {**env, "PROMOTER_STATE_DIR": str(work / "state-rebuild")}
            run_measured(again, rebuild_env)
            rebuild_s, rebuild_rss, out = run_measured(again, rebuild_env)
            rebuilt = json.loads(out)
    copy_s = (copy_first.seconds + copy_last.seconds) / 2
    size = built["size"] / 2**20
    target = 0.8 if case == "modelcar" else 1.0
    ratios = {"fresh process": build.seconds / copy_s, "in service": warm["seconds"] / copy_s,
              "bare upload": bare["seconds"] / copy_s}
    print(f"[{case}] model: {size_mib} MiB random weights; image {size:.0f} MiB, "
          f"{len(built['layers'])} layer(s); digest {built['digest']}")
    print(f"skopeo copy (oci:)  : {copy_first.seconds:7.2f} s   peak RSS "
          f"{copy_first.rss_mib:6.1f} MiB   registry CPU {copy_first.registry_cpu:5.2f} s   "
          "(first in the run)")
    print(f"promoter build+push : {build.seconds:7.2f} s   peak RSS {build.rss_mib:6.1f} MiB   "
          f"uploaded {built['bytes_uploaded'] / 2**20:.0f} MiB   "
          f"registry CPU {build.registry_cpu:5.2f} s   (a fresh process)")
    print(f"bare upload         : {bare['seconds']:7.2f} s   the largest blob "
          f"({bare['bytes'] / 2**20:.0f} MiB) from memory, hashed beforehand, one PATCH   "
          f"registry CPU {bare_push.registry_cpu:5.2f} s")
    print(f"  in service        : {warm['seconds']:7.2f} s   uploaded "
          f"{warm['bytes_uploaded'] / 2**20:.0f} MiB   (a warm process, as the worker builds); "
          f"same digest: {warm['digest'] == built['digest']}")
    print(f"skopeo copy (oci:)  : {copy_last.seconds:7.2f} s   peak RSS "
          f"{copy_last.rss_mib:6.1f} MiB   registry CPU {copy_last.registry_cpu:5.2f} s   "
          f"(last in the run; baseline: the mean, {copy_s:.2f} s)")
    print(f"ratio promoter/skopeo: {ratios['fresh process']:.2f} fresh process, "
          f"{ratios['in service']:.2f} in service  (target <= {target}; a bare upload "
          f"{ratios['bare upload']:.2f}, the registry's CPU alone "
          f"{build.registry_cpu / copy_s:.2f})")
    print(f"rebuild             : {rebuild_s:7.2f} s   peak RSS {rebuild_rss:6.1f} MiB   "
          f"uploaded {rebuilt['bytes_uploaded']} bytes; same digest: "
          f"{rebuilt['digest'] == built['digest']}")
    return ratios

if __name__ == "__main__":
    main()
