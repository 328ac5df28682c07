"""Tiny real models for modelcar tests, made here (nothing downloaded from a hub).

- ``save_onnx_model``: an ONNX graph ``y = x @ W + b`` built with ``onnx.helper``, saved by
  ``mlflow.onnx`` with a named tensor signature (its weights >1 KiB, so MLflow saves them as
  external data beside model.onnx, as it does for real models);
- ``save_hf_directory``: a Hugging Face directory (config.json, tokenizer files, safetensors
  weights written by ``safetensors``);
- ``save_transformers_flavor``: the same files in MLflow's ``transformers`` flavor layout
  (``model/`` + ``components/tokenizer/`` + MLmodel), which mlflow.transformers.save_model
  writes (the transformers package itself is not needed to read it back).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ONNX_INPUT = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)
ONNX_OUTPUTS = 300


def onnx_weights() -> tuple[Any, Any]:
    weights = (np.arange(3 * ONNX_OUTPUTS, dtype=np.float32).reshape(3, ONNX_OUTPUTS) / 100)
    bias = np.linspace(-1, 1, ONNX_OUTPUTS, dtype=np.float32)
    return weights, bias


def onnx_expected() -> Any:
    weights, bias = onnx_weights()
    return ONNX_INPUT @ weights + bias


def save_onnx_model(path: Path) -> Path:
    import mlflow.onnx
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx import TensorProto, helper, numpy_helper

    weights, bias = onnx_weights()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"],
                                                                          ["y"])],
        "tiny-ranker",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, ONNX_OUTPUTS])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3), "x")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, ONNX_OUTPUTS), "y")]))
    mlflow.onnx.save_model(model, str(path), signature=signature)
    return path


HF_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
             "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
             "num_key_value_heads": 2, "vocab_size": 32, "max_position_embeddings": 64,
             "torch_dtype": "float32"}
TOKENIZER_FILES = {
    "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": {
        f"t{i}": i for i in range(32)}, "unk_token": "t0"}}),
    "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                         "model_max_length": 64}),
    "special_tokens_map.json": json.dumps({"unk_token": "t0"}),
}


def hf_tensors() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {"model.embed_tokens.weight": rng.standard_normal((32, 16), dtype=np.float32),
            "model.layers.0.mlp.up_proj.weight": rng.standard_normal((32, 16),
                                                                     dtype=np.float32),
            "lm_head.weight": rng.standard_normal((32, 16), dtype=np.float32)}


def _write_model_files(directory: Path) -> None:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(HF_CONFIG, indent=2), encoding="utf-8")
    (directory / "generation_config.json").write_text('{"max_new_tokens": 8}',
                                                       encoding="utf-8")
    save_file(hf_tensors(), str(directory / "model.safetensors"),
              metadata={"format": "pt"})


def _write_tokenizer(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in TOKENIZER_FILES.items():
        (directory / name).write_text(text, encoding="utf-8")


def save_hf_directory(path: Path) -> Path:
    _write_model_files(path)
    _write_tokenizer(path)
    return path


def save_transformers_flavor(path: Path) -> Path:
    _write_model_files(path / "model")
    _write_tokenizer(path / "components" / "tokenizer")
    (path / "MLmodel").write_text(
        "flavors:\n"
        "  transformers:\n"
        "    code: null\n"
        "    components:\n    - tokenizer\n"
        "    framework: pt\n"
        "    instance_type: TextGenerationPipeline\n"
        "    model_binary: model\n"
        "    pipeline_model_type: LlamaForCausalLM\n"
        "    source_model_name: tiny-llama\n"
        "    task: text-generation\n"
        "    tokenizer_type: PreTrainedTokenizerFast\n"
        "  python_function:\n"
        "    loader_module: mlflow.transformers\n"
        "mlflow_version: 2.20.0\n", encoding="utf-8")
    (path / "requirements.txt").write_text("transformers\n", encoding="utf-8")
    return path


def layout_of(runtime: str) -> str:
    """The modelcar layout the project's own descriptor of ``runtime`` names, or the runtime
    itself when no descriptor names one (so an unknown layout reaches the builder's refusal)."""
    from promoter.core.runtimes import parse_descriptors
    from promoter.rendering import load_descriptors
    from tests.conftest import ROOT

    descriptors = parse_descriptors(load_descriptors(ROOT / "templates"))
    descriptor = descriptors.get(runtime)
    return (descriptor.modelcar_layout if descriptor else None) or runtime
