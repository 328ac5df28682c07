"""Modelcars: OCI images holding a model's files under ``/models``, laid out for one runtime.

KServe mounts a modelcar's ``/models`` into the server (``storageUri: oci://REPO@sha256:…``);
a plain Deployment mounts the image as an image volume. The layout depends on the runtime:

- ``kserve`` (``mlflow``): the MLflow model directory itself, ``/models/MLmodel`` …;
- ``vllm`` (``huggingface``): the Hugging Face files (config.json, tokenizer files,
  ``*.safetensors``) directly under ``/models``, taken from an MLflow ``transformers`` model
  (its ``model/`` and ``components/<name>/`` directories) or from a directory that holds them;
- ``triton``: ``/models/<name>/<version>/model.onnx|model.plan`` plus
  ``/models/<name>/config.pbtxt`` derived from the MLflow signature (``core.triton``).

The image is one uncompressed, reproducible tar layer (weights do not compress, and its
digest is hashed while it uploads: one read of the files) with no entrypoint: same files →
same digest.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast, get_args

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter import __version__
from promoter.core import hf_directory, triton
from promoter.core.runtimes import ModelcarLayout as Layout
from promoter.errors import UserError
from promoter.image.base import BaseImage
from promoter.image.builder import BUILD_INPUTS_LABEL, SOURCE_INPUTS_LABEL, Assembled
from promoter.image.config import EPOCH, config_blob, image_manifest, set_platform
from promoter.image.layers import TAR, Blob, Layer
from promoter.image.lineage import lineage_labels
from promoter.image.platform import Platform
from promoter.image.tarstream import (
    TarEntry,
    check_merged_links,
    data_entry,
    entries_for_tree,
    file_entry,
    tar_chunks,
    tar_size,
)
from promoter.ports.image import ModelcarRequest, ModelLineage

LAYOUTS: tuple[Layout, ...] = get_args(Layout)
MODELS = "models"
LAYOUT_LABEL = "io.promoter.modelcar.layout"
# MLflow's bookkeeping next to a model's files: not part of a Hugging Face directory.
MLFLOW_FILES = frozenset({"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt",
                          "input_example.json", "serving_input_example.json",
                          "registered_model_meta"})


def layout_for(request: ModelcarRequest) -> Layout:
    for layout in LAYOUTS:
        if request.layout == layout:
            return layout
    raise UserError(f"no modelcar layout {request.layout!r} (known: {', '.join(LAYOUTS)})",
                    hint="a runtime names its layout in templates/<runtime>/runtime.yaml "
                         "(modelcarLayout)")


def read_mlmodel(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "MLmodel"
    if not path.is_file():
        return None
    try:
        data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YAMLError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    return data if isinstance(data, dict) else None


def plan(model_dir: Path, version: str, request: ModelcarRequest) -> list[TarEntry]:
    """Every member of the modelcar's layer, sorted: where each model file goes."""
    layout = layout_for(request)
    if layout == "mlflow":
        if not (model_dir / "MLmodel").is_file():
            raise UserError(f"{model_dir} is not an MLflow model directory (no MLmodel file)",
                            hint="runtime kserve serves MLflow models; log one with "
                                 "mlflow.<flavor>.log_model")
        entries = entries_for_tree(model_dir, MODELS)
    elif layout == "huggingface":
        entries = _huggingface(model_dir)
    else:
        entries = _triton(model_dir, version, request)
    return sorted(entries, key=lambda entry: entry.arcname)


def _huggingface(model_dir: Path) -> list[TarEntry]:
    directories = hf_directory.flavor_directories(read_mlmodel(model_dir))
    if directories is not None:
        # MLmodel comes with the model: its directory names must stay inside the model.
        sources = [path for path in (model_dir / name for name in directories)
                   if path.is_dir() and _inside(model_dir, path)]
    else:
        sources = [model_dir]
    merged: dict[str, TarEntry] = {}
    for source in sources:
        for entry in entries_for_tree(source, MODELS):
            if source == model_dir and entry.arcname.split("/")[1:2] and \
                    entry.arcname.split("/")[1] in MLFLOW_FILES:
                continue
            seen = merged.get(entry.arcname)
            if seen is not None and not (seen.kind == entry.kind == "dir"):
                raise UserError(f"{model_dir}: {entry.arcname.removeprefix('models/')} is in "
                                "more than one of the model's directories; vLLM reads one "
                                "flat Hugging Face directory")
            merged[entry.arcname] = entry
    check_merged_links(list(merged.values()), MODELS)
    names = {arcname.removeprefix(f"{MODELS}/") for arcname in merged}
    if "config.json" not in names or not any(name.endswith(".safetensors") for name in names):
        raise UserError(f"{model_dir} holds no Hugging Face model (config.json and *.safetensors "
                        "weights) for vLLM",
                        hint="log the model with mlflow.transformers (safetensors weights), or "
                             "register a directory holding config.json, the tokenizer files "
                             "and *.safetensors")
    return list(merged.values())


def _triton(model_dir: Path, version: str, request: ModelcarRequest) -> list[TarEntry]:
    triton.check_name(request.name)  # before the name is in any message or path
    model_format = cast(triton.ModelFormat, request.model_format)
    if model_format not in triton.PLATFORMS:
        raise UserError(f"{request.name}: Triton model format {request.model_format!r} is "
                        f"not one of {', '.join(triton.PLATFORMS)}")
    if not version.isdigit() or int(version) < 1:
        raise UserError(f"{request.name}: Triton needs a positive integer model version "
                        f"directory, and the version is {version!r}")
    mlmodel = read_mlmodel(model_dir)
    if mlmodel is None:
        raise UserError(f"{model_dir} is not an MLflow model directory (no MLmodel file); "
                        "Triton's config.pbtxt is derived from its signature")
    config = triton.config_pbtxt(request.name, mlmodel.get("signature"),
                                 model_format=model_format,
                                 max_batch_size=request.max_batch_size)
    source = _model_file(model_dir, mlmodel, model_format)
    places = triton.layout(request.name, version, model_format)
    version_dir = places["model"].rsplit("/", 1)[0]
    directories = [MODELS, f"{MODELS}/{request.name}", version_dir]
    entries = [*(TarEntry(path, None, "dir") for path in directories),
               data_entry(places["config"], config.encode("utf-8")),
               file_entry(places["model"], source, source.lstat())]
    # An ONNX model's external data (large tensors MLflow saves beside model.onnx) is read
    # from the model file's directory: it goes into the version directory with it.
    for sibling in sorted(source.parent.iterdir()):
        if sibling == source or sibling.name in MLFLOW_FILES or sibling.is_symlink() \
                or not sibling.is_file() or model_format != "onnx":
            continue
        entries.append(file_entry(f"{version_dir}/{sibling.name}", sibling, sibling.lstat()))
    return entries


def _model_file(model_dir: Path, mlmodel: Mapping[str, Any], model_format: str) -> Path:
    _, filename = triton.PLATFORMS[cast(triton.ModelFormat, model_format)]
    candidates = []
    onnx = (mlmodel.get("flavors") or {}).get("onnx")
    if model_format == "onnx" and isinstance(onnx, dict) and onnx.get("data"):
        candidates.append(model_dir / str(onnx["data"]))
    candidates += [model_dir / filename, *sorted(model_dir.rglob(filename))]
    for path in candidates:
        if path.is_file() and not path.is_symlink() and _inside(model_dir, path):
            return path
    raise UserError(f"{model_dir} has no {filename} for Triton ({model_format})",
                    hint="log an ONNX model with mlflow.onnx, or set spec.serving.modelFormat")


def _inside(root: Path, path: Path) -> bool:
    """``path`` (resolved) is ``root`` or below it: no ``..`` or symlink out of the model."""
    resolved, base = path.resolve(), root.resolve()
    return resolved == base or base in resolved.parents


def _digest_of(data: object) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def source_inputs(lineage: ModelLineage, request: ModelcarRequest, base: BaseImage | None,
                  labels: Mapping[str, str], platform: Platform) -> str | None:
    """Everything a modelcar depends on, named without reading the model's files; None when
    the model's source is mutable."""
    if lineage.content_id is None:
        return None
    return _digest_of({"builder": f"promoter {__version__}", "kind": "modelcar",
                       "content": lineage.content_id, "request": asdict(request),
                       "model": [lineage.name, lineage.version, lineage.run_id, lineage.source],
                       "base": base.reference.digest if base else None,
                       "platform": list(platform.parts()), "labels": dict(labels)})


def layer_blob(entries: list[TarEntry], digest: str = "") -> Blob:
    """The modelcar's one layer: uncompressed (its digest is its diff_id), regenerated from
    disk when read. ``digest`` is "" until known (computed while uploading)."""
    return Blob(TAR, digest, tar_size(entries), lambda: tar_chunks(entries))


def layer_identity(entries: list[TarEntry]) -> str:
    """What the layer's bytes depend on, read from file metadata only (path, size, mtime,
    ctime, inode): an unchanged tree maps to its recorded digest without reading the files.
    The ctime is the kernel's: a copy that keeps the size and sets the old mtime
    (``cp --preserve=timestamps``, ``touch -r``) still changes it."""
    described = []
    for entry in entries:
        item: list[Any] = [entry.arcname, entry.kind, entry.link_target, entry.executable]
        if entry.data is not None:
            item.append(hashlib.sha256(entry.data).hexdigest())
        elif entry.source is not None and entry.kind == "file":
            info = entry.source.stat()
            item += [str(entry.source.resolve()), info.st_size, info.st_mtime_ns,
                     info.st_ctime_ns, info.st_ino, info.st_dev]
        described.append(item)
    return _digest_of({"tar": 2, "entries": described})


# A file changed this shortly before it was listed may change again within the same
# timestamp tick (the kernel stamps times at a few milliseconds' granularity, some
# filesystems at a second or two) without its metadata showing it.
SETTLED_SECONDS = 2.0


def settled(entries: list[TarEntry], listed_at: float) -> bool:
    """Whether every file's metadata can stand for its content (its digest remembered under
    ``layer_identity``): none changed within SETTLED_SECONDS before ``listed_at`` (when the
    identity was taken) or since. Git treats such an index entry as "racily clean" too."""
    for entry in entries:
        if entry.source is not None and entry.kind == "file":
            info = entry.source.stat()
            if listed_at - max(info.st_mtime, info.st_ctime) < SETTLED_SECONDS:
                return False
    return True


def layer_digest(entries: list[TarEntry]) -> str:
    """The layer's digest from its bytes (one read of the files, nothing sent)."""
    hasher = hashlib.sha256()
    for chunk in tar_chunks(entries):
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def assemble(layer_digest: str, entries: list[TarEntry], request: ModelcarRequest,
             lineage: ModelLineage, base: BaseImage | None, labels: Mapping[str, str],
             platform: Platform) -> Assembled:
    layout = layout_for(request)
    layer = Layer(layer_blob(entries, layer_digest), layer_digest,
                  f"modelcar: {layout} layout under /{MODELS}")
    all_labels = {**lineage_labels(lineage, base), **labels, LAYOUT_LABEL: layout}
    inputs = all_labels[BUILD_INPUTS_LABEL] = _digest_of({
        "builder": f"promoter {__version__}", "kind": "modelcar",
        "base": base.reference.digest if base else None, "platform": str(platform),
        "layers": [layer.diff_id], "labels": all_labels})
    source = source_inputs(lineage, request, base, labels, platform)
    if source is not None:
        all_labels[SOURCE_INPUTS_LABEL] = source
    # The base's index may have chosen the variant image.platform left open (arm: v7, v6…).
    config = modelcar_config(base.config if base else None, layer, all_labels,
                             base.platform if base else platform)
    blob = config_blob(config)
    layers = (base.layers if base else []) + [layer]
    manifest = image_manifest(blob, layers)
    return Assembled(layers, blob, manifest, "sha256:" + hashlib.sha256(manifest).hexdigest(),
                     inputs)


def modelcar_config(base_config: Mapping[str, Any] | None, layer: Layer,
                    labels: Mapping[str, str], platform: Platform) -> dict[str, Any]:
    """The base's config (if any) plus the model layer; no entrypoint of ours: KServe and image
    volumes only read the files."""
    config: dict[str, Any] = copy.deepcopy(dict(base_config or {}))
    set_platform(config, platform)
    config["created"] = EPOCH
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), layer.diff_id]
    config["history"] = [*(config.get("history") or []),
                         {"created": EPOCH, "created_by": f"promoter: {layer.comment}"}]
    run: dict[str, Any] = dict(config.get("config") or {})
    run["Labels"] = {**(run.get("Labels") or {}), **labels}
    config["config"] = run
    return config
