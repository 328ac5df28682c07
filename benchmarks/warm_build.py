"""One image build timed inside an already warm promoter process (run by benchmarks/image.py).

`promoter serve`'s worker builds every promotion's image in one long-lived process: Python's
start-up, the imports, the settings and the registry client code are paid once, when the
service starts. A fresh `promoter image …` process pays them on every build (about 0.5-0.8 s
here). This script pays them first, on a small warm-up build to another repository, then times
the real build through the same composition functions the worker calls (a local model
directory, so no MLflow download is in the figure; the CLI figure has none either).
Prints {"seconds", "digest", "bytes_uploaded"} as JSON.
Usage: python benchmarks/warm_build.py pyfunc|modelcar MODEL_DIR WARMUP_DIR REGISTRY/REPO
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    case, model, warmup, repository = sys.argv[1:5]
    from promoter.ports.image import BuiltImage, ModelcarRequest
    from promoter.service.composition.images import build_image, build_modelcar
    from promoter.settings import load_settings

    settings = load_settings(None, os.environ)
    request = ModelcarRequest(layout="huggingface", name="bench")

    def build(directory: str, target: str) -> BuiltImage:
        if case == "modelcar":
            return build_modelcar(settings, directory, target, request)
        return build_image(settings, directory, target)

    registry = repository.split("/", 1)[0]
    build(warmup, f"{registry}/bench/warmup")
    started = time.perf_counter()
    built = build(model, repository)
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "digest": built.digest,
                      "bytes_uploaded": built.bytes_uploaded}))


if __name__ == "__main__":
    main()
