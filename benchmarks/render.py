"""Render benchmark: 1,000 intents x 3 environments, against one `kubectl kustomize` call.

Each intent is rendered for its three environments in turn, as `promoter render` and the
pipeline do, so the shared base is rendered once per model. Prints files/s, total seconds and
peak memory for the render (pure, in-process), then the wall
time of a single `kubectl kustomize` on one overlay and the ratio. Target: all 3,000 overlays in
under 3 s on the project's 2-core machine. Not a test: it prints figures, it does not judge them.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promoter import rendering
from promoter.core.render import ImagePin, Lineage
from promoter.image_settings import ImageSettings
from promoter.settings import Environment, Settings, Trigger

INTENTS = 1000
ENVIRONMENTS = ("dev", "staging", "production")
RUNTIMES = ("kserve", "deployment", "vllm", "triton")


def intent(index: int) -> dict[str, object]:
    gpu = index % 4
    return {"apiVersion": "promoter.dev/v1alpha1", "kind": "ModelDeployment", "spec": {
        "model": {"name": f"Model {index}", "version": str(1 + index % 50)},
        "owner": {"team": f"team-{index % 17}", "costCenter": f"cc-{index % 97}"},
        "runtime": RUNTIMES[index % len(RUNTIMES)] if gpu else "deployment",
        "description": f"benchmark model {index}",
        "resources": {"cpu": "2", "memory": "8Gi",
                      "gpu": {"count": gpu, "type": "NVIDIA-L40S"} if gpu else {"count": 0}},
        "scaling": {"minReplicas": 1, "maxReplicas": 4, "metric": "cpu", "target": 70},
        "regions": ["eu-west-1", "us-east-1"] if index % 3 == 0 else [],
        "environments": {"dev": {"scaling": {"maxReplicas": 1}}},
    }}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help only
    settings = Settings(environments={
        env: Environment(trigger=Trigger(alias=env), namespace=f"models-{env}")
        for env in ENVIRONMENTS}, image=ImageSettings(base="docker.io/library/python:3.11-slim"))
    renderer = rendering.renderer(settings)
    intents = [intent(i) for i in range(INTENTS)]
    image = ImagePin("registry.example.com/models/m", "sha256:" + "cd" * 32)
    modelcar = ImagePin("registry.example.com/modelcars/m", "sha256:" + "ef" * 32)

    started = time.perf_counter()
    files = 0
    last: dict[str, str] = {}
    for index, document in enumerate(intents):
        for env in ENVIRONMENTS:
            request = rendering.build_request(settings, document, env, origin=f"intent {index}",
                                              lineage=Lineage(run_id=f"{index:032x}",
                                                              source=f"s3://models/{index}"),
                                              image=image, modelcar=modelcar)
            last = renderer.render(request)
            files += len(last)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    overlays = INTENTS * len(ENVIRONMENTS)
    print(f"rendered {overlays} overlays ({files} files) in {elapsed:.2f} s")
    print(f"  {files / elapsed:,.0f} files/s, {overlays / elapsed:,.0f} overlays/s")
    print(f"  peak RSS of the whole process {peak / 2**20:.1f} MiB")
    print(f"  target: {overlays} overlays < 3 s -> {'met' if elapsed < 3 else 'NOT met'}")

    if shutil.which("kubectl") is None:
        print("kubectl not found: skipping the kustomize comparison")
        return
    with tempfile.TemporaryDirectory() as tmp:
        rendering.write_tree(Path(tmp), last)
        overlay = next(Path(tmp).glob("*/overlays/*"))
        started = time.perf_counter()
        subprocess.run(["kubectl", "kustomize", str(overlay)], check=True, capture_output=True)
        kustomize = time.perf_counter() - started
    per_overlay = elapsed / overlays
    print(f"kubectl kustomize, one overlay: {kustomize * 1000:.0f} ms")
    print(f"  render per overlay {per_overlay * 1000:.2f} ms; "
          f"ratio kustomize/render = {kustomize / per_overlay:,.0f}x")


if __name__ == "__main__":
    main()
