"""Triton's model repository layout and ``config.pbtxt``, derived from an MLflow signature.

A Triton modelcar holds ``models/<name>/config.pbtxt`` and ``models/<name>/<version>/model.onnx``
(or ``model.plan`` for TensorRT). The config names the backend platform, the batch size and
every input and output with its data type and dimensions; they come from the model's MLflow
signature (tensor specs map one to one; column specs become one ``[1]`` tensor per column).
Pure: the signature arrives parsed or as the JSON strings an MLmodel file holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from promoter.core.naming import name_problem
from promoter.errors import UserError

ModelFormat = Literal["onnx", "tensorrt"]
PLATFORMS: dict[str, tuple[str, str]] = {  # format → (Triton platform, file in the version dir)
    "onnx": ("onnxruntime_onnx", "model.onnx"),
    "tensorrt": ("tensorrt_plan", "model.plan"),
}
# MLflow tensor dtypes (numpy names) and column types → Triton data types.
TENSOR_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32", "uint64": "TYPE_UINT64", "int8": "TYPE_INT8",
    "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "str": "TYPE_STRING", "object": "TYPE_STRING", "bytes": "TYPE_STRING",
}
COLUMN_TYPES = {
    "boolean": "TYPE_BOOL", "integer": "TYPE_INT32", "long": "TYPE_INT64",
    "float": "TYPE_FP32", "double": "TYPE_FP64", "string": "TYPE_STRING",
    "binary": "TYPE_STRING",
}


def layout(name: str, version: str, model_format: ModelFormat) -> dict[str, str]:
    """Where things go inside the modelcar: ``{"config": path, "model": path}``."""
    check_name(name)
    _, filename = PLATFORMS[model_format]
    return {"config": f"models/{name}/config.pbtxt", "model": f"models/{name}/{version}/{filename}"}


def check_name(name: str) -> None:
    """The model's directory is ``models/<name>``: only a deployment name, one path segment
    that cannot climb out of ``models/`` (``../..``) or name another place (``/etc``)."""
    problem = name_problem(name)
    if problem is not None:
        raise UserError(f"Triton model name {name[:100]!r} {problem}")


def config_pbtxt(name: str, signature: Mapping[str, Any] | None, *,
                 model_format: ModelFormat, max_batch_size: int = 0) -> str:
    """The model's ``config.pbtxt``; a UserError when the signature cannot describe it."""
    if not signature or not signature.get("inputs") or not signature.get("outputs"):
        raise UserError(f"{name}: Triton needs the model's input and output tensors, and its "
                        "MLflow signature does not list them",
                        hint="log the model with a signature (mlflow.models.infer_signature)")
    platform, _ = PLATFORMS[model_format]
    batching = max_batch_size > 0
    lines = [f"name: {_quote(name)}", f"platform: {_quote(platform)}",
             f"max_batch_size: {max_batch_size}"]
    for section in ("input", "output"):
        tensors = [_tensor(name, section, spec, batching)
                   for spec in _specs(name, signature[f"{section}s"], section)]
        lines.append(f"{section} [")
        lines.append(",\n".join(tensors))
        lines.append("]")
    return "\n".join(lines) + "\n"


def _specs(name: str, value: Any, section: str) -> list[Mapping[str, Any]]:
    if isinstance(value, str):  # MLmodel files hold each side as a JSON string
        try:
            value = json.loads(value)
        except ValueError:
            raise UserError(f"{name}: the signature's {section}s are not JSON") from None
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise UserError(f"{name}: the signature's {section}s must be a non-empty list")
    return [spec if isinstance(spec, Mapping) else {} for spec in value]


def _tensor(model: str, section: str, spec: Mapping[str, Any], batching: bool) -> str:
    tensor_name = spec.get("name")
    if not isinstance(tensor_name, str) or not tensor_name:
        raise UserError(f"{model}: every signature {section} needs a name for Triton "
                        "(an unnamed tensor cannot be addressed)")
    if spec.get("type") == "tensor":
        tensor = spec.get("tensor-spec") or {}
        if not isinstance(tensor, Mapping):
            raise UserError(f"{model}: {section} {tensor_name!r} has a tensor-spec that is not "
                            "a mapping")
        data_type = TENSOR_TYPES.get(str(tensor.get("dtype")))
        dims = _dims(model, section, tensor_name, tensor.get("shape"))
        if batching:
            if not dims or dims[0] != -1:
                raise UserError(f"{model}: {section} {tensor_name!r} has no variable batch "
                                "dimension (-1 first), so max_batch_size must be 0")
            dims = dims[1:]
        elif not dims:
            # Triton has no scalar tensors: one value per request is dims [1] reshaped to [],
            # and an empty reshape loads only in a batching model (ValidateIOShape).
            raise UserError(f"{model}: {section} {tensor_name!r} is a scalar (or has no shape), "
                            "which Triton takes only in a batching model",
                            hint="give it a batch dimension (shape [-1]) and set "
                                 "spec.serving.maxBatchSize, or a shape such as [1]")
    else:
        data_type = COLUMN_TYPES.get(str(spec.get("type")))
        dims = [1]
    if data_type is None:
        dtype = tensor.get("dtype") if spec.get("type") == "tensor" else None
        raise UserError(f"{model}: {section} {tensor_name!r} has a type Triton cannot take "
                        f"({str(spec.get('type'))[:40]}/{str(dtype)[:40]})")
    # A tensor that is one value per batch entry: Triton wants dims [1], reshaped to a scalar.
    shape = f"    dims: [ {', '.join(str(d) for d in dims)} ]\n" if dims else \
        "    dims: [ 1 ]\n    reshape: { shape: [ ] }\n"
    return ("  {\n"
            f"    name: {_quote(tensor_name)}\n"
            f"    data_type: {data_type}\n"
            f"{shape}"
            "  }")


_MAX_DIM = 2**63 - 1  # Triton's dims are int64


def _dims(model: str, section: str, tensor_name: str, shape: Any) -> list[int]:
    """The signature's shape as Triton dims: whole numbers, -1 (variable) or 1..int64 max
    (Triton refuses a 0 dim: "dimension must be integer >= 1, or -1").
    The signature is the model owner's data: anything else is their error, named, not a crash
    that the job queue would retry (downloading the model again each time)."""
    if shape is None:
        return []
    if not isinstance(shape, Sequence) or isinstance(shape, str) or len(shape) > 64 or not all(
            type(d) is int and (d == -1 or 1 <= d <= _MAX_DIM) for d in shape):
        raise UserError(f"{model}: {section} {tensor_name!r} has a shape Triton cannot take "
                        f"({str(shape)[:80]}); dims are whole numbers from 1, -1 for "
                        "variable")
    return list(shape)


def _quote(text: str) -> str:
    """A protobuf text-format string literal: quotes, backslashes and controls escaped."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
