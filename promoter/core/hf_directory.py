"""Where a model version's Hugging Face files are: the directories the vLLM modelcar merges
into one flat ``/models`` (promoter.image.modelcar), and the pipeline's check reads
config.json from (promoter.core.vllm_fit) — one rule, so both see the same files.

An MLflow ``transformers`` model keeps the model in its ``model_binary`` directory (default
``model``) and each component (the tokenizer) in ``components/<name>``; any other directory
is taken as the Hugging Face directory itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONFIG = "config.json"


def flavor_directories(mlmodel: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """The directories (relative, ``/``-separated) an MLmodel's transformers flavor names,
    model first; None when there is no such flavor (the directory itself is the model).
    Names come from the model's owner: callers keep them inside the model directory."""
    flavors = (mlmodel or {}).get("flavors")
    flavor = flavors.get("transformers") if isinstance(flavors, Mapping) else None
    if not isinstance(flavor, Mapping):
        return None
    components = flavor.get("components") or []
    names = components if isinstance(components, list) else []
    return (str(flavor.get("model_binary") or "model"),
            *(f"components/{name}" for name in names))


def plain_relative(path: str) -> bool:
    """``path`` is relative and names no ``.``/``..``/empty segment: under the model's root
    however a store joins it."""
    return bool(path) and "\\" not in path and all(
        segment not in ("", ".", "..") for segment in path.split("/"))
