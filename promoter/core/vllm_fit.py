"""What the pinned vLLM refuses at start-up, told from the model's config.json before any MR.

Two checks vLLM makes while it builds its model config raise a ValueError and the pod
crash-loops (facts and line numbers: tests/data/vllm_rules/PROVENANCE.md; the same in the
0.7.2 image of the plain form and the 0.9.2 of KServe's Hugging Face server):

- the attention heads of the model's text config (``num_attention_heads``) must divide by
  ``--tensor-parallel-size``;
- ``--max-model-len`` may not exceed the length vLLM derives from config.json (promoter never
  sets ``VLLM_ALLOW_LONG_MAX_MODEL_LEN``, which would turn that into a warning).

vLLM reads config.json through transformers' config classes, which may add defaults, rename
keys or choose a sub-config; only a part of that can be told from the file alone. So each rule
here refuses only what both vLLM versions certainly refuse, and says nothing when unsure: a
wrong refusal would block a model that runs, a missed one only leaves today's crash-loop.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from promoter.core.intent import InvalidIntent
from promoter.core.manifest_context import server_args
from promoter.core.runtimes import RuntimeDescriptor
from promoter.core.spec import MAX_GPUS, ModelDeployment
from promoter.ports.registry import Registry

# Sub-configs vLLM 0.9.2 may take the text config from besides ``text_config`` (Qwen2.5-Omni's
# thinker; transformers' get_text_config: an encoder's or decoder's), which vLLM 0.7.2 never
# does: with any of them present the two versions may read different heads and lengths.
AMBIGUOUS_SUBCONFIGS = ("thinker_config", "text_encoder", "decoder", "generator")
# Every key vLLM takes the model's length from (the smallest wins), in vLLM's order.
LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
               "model_max_length", "max_target_positions", "max_sequence_length",
               "max_seq_length", "seq_len")
# A sentence-transformers config beside the model replaces the derived length with its own
# max_seq_length (vLLM's encoder config): a length this module does not read.
SENTENCE_CONFIGS = frozenset({
    "sentence_bert_config.json", "sentence_roberta_config.json",
    "sentence_distilbert_config.json", "sentence_camembert_config.json",
    "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json"})
TENSOR_PARALLEL_FLAG = "--tensor-parallel-size"
MAX_MODEL_LEN_FLAG = "--max-model-len"


def _number(value: Any) -> bool:
    """A length vLLM compares as we do (JSON may also hold NaN and Infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def text_config(config: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(where it is, the text config) as both vLLM versions choose it; None when they may
    differ (an ambiguous sub-config) or the chosen one is not a mapping."""
    if any(key in config for key in AMBIGUOUS_SUBCONFIGS) or _other_model_config(config):
        return None
    if "text_config" not in config:
        return "", config
    chosen = config["text_config"]
    return ("text_config.", chosen) if isinstance(chosen, Mapping) else None


def _other_model_config(config: Mapping[str, Any]) -> bool:
    """A nested config of a model besides ``text_config`` (``llm_config``, which vLLM 0.9.2
    renames to text_config; ``language_config`` and others that registered config classes
    build their text config from): vLLM may read heads and lengths there, not at the top."""
    return any(isinstance(value, Mapping) and "num_attention_heads" in value
               for key, value in config.items() if key != "text_config")


def heads_problem(config: Mapping[str, Any], tensor_parallel_size: int) -> str | None:
    """vLLM: the text config's attention heads must divide by the tensor-parallel size."""
    found = text_config(config)
    if found is None or tensor_parallel_size <= 1:
        return None
    where, text = found
    # Missing: the config class may supply a default (0 and absent pass in vLLM anyway).
    heads = text.get("num_attention_heads")
    if not isinstance(heads, int) or isinstance(heads, bool) or heads <= 0 or \
            heads % tensor_parallel_size == 0:
        return None
    fitting = [str(n) for n in range(1, min(heads, MAX_GPUS) + 1) if heads % n == 0]
    return (f"spec.resources.gpu.count: {tensor_parallel_size} GPUs run vLLM with "
            f"--tensor-parallel-size={tensor_parallel_size}, and the model's {heads} attention "
            f"heads ({where}num_attention_heads in config.json) do not divide by "
            f"{tensor_parallel_size}: vLLM refuses to start; use a GPU count that divides "
            f"{heads} ({', '.join(fitting)})")


def derived_length(config: Mapping[str, Any],
                   files: Collection[str]) -> tuple[str, int | float] | None:
    """(key, length): the longest ``--max-model-len`` vLLM accepts, when config.json alone
    tells it; None when anything that could lengthen it applies (RoPE scaling, a
    model_max_length, a sentence-transformers config, a sub-config) or no key is there."""
    chosen = text_config(config)
    if chosen is None or chosen[0] or config.get("rope_scaling") is not None or \
            config.get("model_max_length") is not None or SENTENCE_CONFIGS & set(files):
        return None
    present = {key: config[key] for key in LENGTH_KEYS if config.get(key) is not None}
    if not present or not all(_number(value) for value in present.values()):
        return None
    key = min(present, key=lambda name: present[name])
    return key, present[key]


def length_problem(config: Mapping[str, Any], max_model_len: int | None,
                   files: Collection[str]) -> str | None:
    """vLLM: --max-model-len may not exceed the length config.json gives the model."""
    derived = derived_length(config, files) if max_model_len is not None else None
    if derived is None or max_model_len is None or max_model_len <= derived[1]:
        return None
    key, length = derived
    shown = int(length) if float(length).is_integer() else length
    return (f"spec.serving.maxModelLen: {max_model_len} is longer than the model's "
            f"{shown} tokens ({key} in config.json): vLLM refuses a longer --max-model-len at "
            f"start-up; set maxModelLen to {shown} or less, or leave it unset")


def problems(config: Mapping[str, Any], *, tensor_parallel_size: int,
             max_model_len: int | None, files: Collection[str] = ()) -> list[str]:
    """Each start-up refusal of vLLM this model and these flags meet, one sentence each
    naming the intent field to change. ``files``: the names in the model's directory."""
    found = [heads_problem(config, tensor_parallel_size),
             length_problem(config, max_model_len, files)]
    return [problem for problem in found if problem]


def flag_value(args: Sequence[str], flag: str) -> int | None:
    """The integer a ``--flag=N`` argument gives, or None when the argument is not there."""
    for arg in args:
        name, _, value = arg.partition("=")
        if name == flag and value.isdigit():
            return int(value)
    return None


def refuse_misfit(registry: Registry, deployment: ModelDeployment,
                  descriptor: RuntimeDescriptor | None, model: str, version: str,
                  environment: str) -> None:
    """InvalidIntent when vLLM would refuse to start this version with the flags rendered for
    ``deployment``. Runtimes serving a Hugging Face directory (vLLM's) only; the version's
    config.json is read from the registry, so a reused modelcar is checked as a new one.
    Without a readable config.json nothing is refused: the modelcar build names that."""
    if descriptor is None or descriptor.modelcar_layout != "huggingface" or \
            descriptor.platform(deployment) not in descriptor.platforms:
        return   # not vLLM's; an unknown platform is named by the runtime check
    args = server_args(descriptor.form(deployment), deployment)
    tensor_parallel = flag_value(args, TENSOR_PARALLEL_FLAG) or 1
    max_model_len = flag_value(args, MAX_MODEL_LEN_FLAG)
    if tensor_parallel == 1 and max_model_len is None:
        return   # vLLM's defaults fit every model: nothing to read
    files = registry.huggingface_files(model, version)
    if files.config is None:
        return
    found = problems(files.config, tensor_parallel_size=tensor_parallel,
                     max_model_len=max_model_len, files=files.names)
    if found:
        raise InvalidIntent(
            f"{model!r} version {version} cannot start on vLLM in {environment} as "
            "the intent asks:\n  " + "\n  ".join(found),
            hint="change the fields named (deploy.* tags or the logged modeldeployment.yaml), "
                 "then set the alias again")
