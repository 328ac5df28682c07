"""A version's Hugging Face directory as vLLM will read it, from MLflow without the weights:
the file names in the directories the modelcar merges (``core.hf_directory``: the transformers
flavor's ``model_binary`` and components, else the directory itself) and its config.json.

Only MLmodel and config.json are downloaded, each refused above a size limit before and after
the download; what cannot be read as the modelcar build would read it comes back as "no
config" (the pipeline's check then says nothing, and the build names the problem).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter.adapters.mlflow.artifacts import Artifacts
from promoter.core import hf_directory
from promoter.ports.registry import HuggingFaceFiles

# Real config.json and MLmodel files are kilobytes; a megabyte is far beyond any of them.
MAX_FILE_BYTES = 1 << 20
MLMODEL = "MLmodel"
_PARSE_ERRORS = (YAMLError, ValueError, RecursionError, UnicodeDecodeError)


def read_huggingface_files(artifacts: Artifacts, root: str) -> HuggingFaceFiles:
    root = root.rstrip("/")
    top = artifacts.sizes(root)
    directories: tuple[str, ...] | None = None
    if MLMODEL in top:
        text = _small_file(artifacts, f"{root}/{MLMODEL}", top[MLMODEL])
        if text is None:
            return HuggingFaceFiles()
        try:
            mlmodel = YAML(typ="safe", pure=True).load(text.decode("utf-8"))
        except _PARSE_ERRORS:
            return HuggingFaceFiles()   # the build refuses an unreadable MLmodel
        directories = hf_directory.flavor_directories(
            mlmodel if isinstance(mlmodel, dict) else None)
    if directories is None:
        listed = {root: top}
    else:
        # The modelcar keeps only directories inside the model: a name with `..` is not
        # followed here (then there is no config and nothing is refused).
        listed = {f"{root}/{name}": artifacts.sizes(f"{root}/{name}")
                  for name in directories if hf_directory.plain_relative(name)}
    names = frozenset(name for sizes in listed.values() for name in sizes)
    holding = [(where, sizes[hf_directory.CONFIG]) for where, sizes in listed.items()
               if hf_directory.CONFIG in sizes]
    if len(holding) != 1:
        return HuggingFaceFiles(names=names)   # none, or two: the build refuses both
    where, size = holding[0]
    raw = _small_file(artifacts, f"{where}/{hf_directory.CONFIG}", size)
    return HuggingFaceFiles(names=names, config=_json_object(raw))


def _small_file(artifacts: Artifacts, uri: str, listed_size: int | None) -> bytes | None:
    """The file's bytes, or None when it is larger than MAX_FILE_BYTES."""
    if listed_size is not None and listed_size > MAX_FILE_BYTES:
        return None
    with tempfile.TemporaryDirectory(prefix="promoter-hf-") as tmp:
        path = Path(artifacts.download(uri, tmp))
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    return data if len(data) <= MAX_FILE_BYTES else None


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):   # UnicodeDecodeError is a ValueError
        return None
    return parsed if isinstance(parsed, dict) else None
