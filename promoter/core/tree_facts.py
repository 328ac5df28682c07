"""Facts promoter reads back from the manifests it wrote on the target branch.

Pure text reading: promoter's own serializer (core.yamltext) writes every annotation on one
line as ``key: value`` with the value plain or a JSON string literal, so reading one back needs
no YAML parser. A file someone rewrote in another style reads as "unknown" (None), and callers
treat unknown as "not provably ours".
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from promoter.core import keda_overlay

REGISTERED_MODEL = "promoter.dev/registered-model"   # in the base's commonAnnotations
MODEL_VERSION = "promoter.dev/model-version"         # in an overlay's commonAnnotations
TEAM = "promoter.dev/team"                           # in an overlay's commonAnnotations
GPU_CLAIM = "promoter.dev/gpu-claim"                 # GPUs x maxReplicas, in the overlay
# The overlay's pins (commonAnnotations), which a re-render of the same version carries forward:
RUN_ID = "promoter.dev/mlflow-run-id"
MODEL_SOURCE = "promoter.dev/model-source"
IMAGE = "promoter.dev/image"                         # the pyfunc serving image, repo@digest
MODELCAR = "promoter.dev/modelcar"                   # the signed modelcar, repo@digest


def annotation(kustomization: str, key: str) -> str | None:
    """The value of annotation ``key`` in a kustomization promoter rendered, or None."""
    prefix = f"{key}:"
    for line in kustomization.splitlines():
        text = line.strip()
        if not text.startswith(prefix):
            continue
        value = text[len(prefix):].strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            # A single-quoted scalar: how a generic YAML dumper writes "1" (an earlier
            # `promoter forecast` rewrote overlay kustomizations that way).
            return value[1:-1].replace("''", "'") or None
        if not value.startswith('"'):
            return value or None
        try:
            decoded = json.loads(value)
        except ValueError:
            return None
        return decoded if isinstance(decoded, str) else None
    return None


# What a deployment directory whose base names no registered model is, in messages.
FOREIGN_DIRECTORY = "a directory promoter did not write"


def base_owner(base: str | bytes | None) -> str | None:
    """The registered model a deployment directory belongs to, read from its base
    kustomization's ``promoter.dev/registered-model``; None when promoter did not write it:
    no base kustomization, no such annotation, or not text promoter writes (not UTF-8). One
    rule for every writer (the pipeline's name check, `promoter render --out`), so a
    directory someone wrote by hand is never taken for a model's and overwritten."""
    if isinstance(base, bytes):
        try:
            base = base.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return annotation(base, REGISTERED_MODEL) if base else None


def team_claims(overlays: Mapping[str, str]) -> dict[str, int]:
    """team → GPUs claimed, summed over overlay kustomizations (path → text) promoter wrote;
    an overlay without the annotations (rendered before they existed) counts as none."""
    claims: dict[str, int] = {}
    for text in overlays.values():
        team, claim = annotation(text, TEAM), annotation(text, GPU_CLAIM)
        if team and claim and claim.isdigit():
            claims[team] = claims.get(team, 0) + int(claim)
    return claims


def base_kustomization(root: str, name: str) -> str:
    return f"{root}/{name}/base/kustomization.yaml"


def overlay_kustomization(root: str, name: str, env: str) -> str:
    return f"{root}/{name}/overlays/{env}/kustomization.yaml"


def scaled_object(root: str, name: str, env: str) -> str:
    """Where an accepted KEDA ScaledObject (a merged `promoter forecast` MR) lives."""
    return f"{root}/{name}/overlays/{env}/{keda_overlay.SCALED_OBJECT_FILE}"


def forecast_plot(root: str, name: str, env: str) -> str:
    """Where `promoter forecast --propose` commits the environment's forecast plot: beside the
    deployment's base/ and overlays/, not under them, so a promotion's re-render (which
    deletes files it does not know under those prefixes) leaves it alone."""
    return f"{root}/{name}/forecast-{env}.png"
