"""What the pinned vLLM refuses at start-up, told from config.json (promoter/core/vllm_fit.py).

Each case is a config vLLM 0.7.2 and 0.9.2 both refuse (the rule must name it, with the
intent field to change), or one where either accepts or the file alone cannot tell (the rule
must stay silent: a wrong refusal blocks a model that runs). Facts:
tests/data/vllm_rules/PROVENANCE.md.
"""

from __future__ import annotations

from typing import Any

import pytest

from promoter.core.vllm_fit import derived_length, flag_value, problems

LLAMA = {"model_type": "llama", "num_attention_heads": 32, "max_position_embeddings": 4096}


def check(config: dict[str, Any], gpus: int = 1, max_len: int | None = None,
          files: tuple[str, ...] = ("config.json", "model.safetensors")) -> list[str]:
    return problems(config, tensor_parallel_size=gpus, max_model_len=max_len, files=files)


@pytest.mark.parametrize("gpus", [1, 2, 4, 8, 16])
def test_a_gpu_count_that_divides_the_heads_fits(gpus: int) -> None:
    assert check(LLAMA, gpus) == []


def test_a_gpu_count_that_does_not_divide_the_heads_names_the_field_and_the_numbers() -> None:
    [problem] = check(LLAMA, 3)
    assert problem.startswith("spec.resources.gpu.count: 3 GPUs")
    assert "32 attention heads (num_attention_heads in config.json)" in problem
    assert "(1, 2, 4, 8, 16)" in problem   # the counts that fit, up to the most GPUs allowed


def test_a_multimodal_model_is_judged_by_its_text_config() -> None:
    llava = {"model_type": "llava", "num_attention_heads": 6,   # not the text model's
             "text_config": {"model_type": "llama", "num_attention_heads": 40}}
    [problem] = check(llava, 3)
    assert "40 attention heads (text_config.num_attention_heads" in problem
    assert check(llava, 4) == [] and check(llava, 6) != []   # 6 divides only the top-level 6


@pytest.mark.parametrize("config", [
    {"model_type": "gpt2", "n_head": 12},                          # another key: class-mapped
    {"model_type": "llava", "text_config": {"model_type": "llama"}},   # class default heads
    {"model_type": "llava", "text_config": None, "num_attention_heads": 32},
    {"num_attention_heads": 32, "thinker_config": {"text_config": {"num_attention_heads": 28}}},
    {"num_attention_heads": 32, "decoder": {"num_attention_heads": 12}},
    {"num_attention_heads": "32"}, {"num_attention_heads": True}, {"num_attention_heads": 0},
    # vLLM 0.9.2 renames llm_config to text_config; other config classes build theirs from
    # language_config: the top-level numbers may not be the ones vLLM reads.
    {"model_type": "NVLM_D", "num_attention_heads": 14, "llm_config": {"num_attention_heads": 64}},
    {"num_attention_heads": 10, "language_config": {"num_attention_heads": 64}},
], ids=["no-key", "sub-config-without-heads", "null-text-config", "thinker", "decoder",
        "text", "bool", "zero", "llm-config", "language-config"])
def test_heads_the_file_does_not_tell_for_both_versions_refuse_nothing(
        config: dict[str, Any]) -> None:
    assert check(config, 3) == []


def test_a_model_config_under_llm_config_refuses_neither_heads_nor_length() -> None:
    """vLLM 0.9.2 reads 64 heads and 32768 tokens here (llm_config becomes text_config)."""
    nvlm = {"model_type": "NVLM_D", "num_attention_heads": 12, "max_position_embeddings": 4096,
            "llm_config": {"num_attention_heads": 64, "max_position_embeddings": 32768}}
    assert check(nvlm, 8, max_len=8192) == []


def test_a_max_model_len_over_the_config_length_names_the_field_and_the_key() -> None:
    [problem] = check(LLAMA, max_len=8192)
    assert problem.startswith("spec.serving.maxModelLen: 8192 is longer than the model's "
                              "4096 tokens (max_position_embeddings in config.json)")
    assert check(LLAMA, max_len=4096) == [] and check(LLAMA, max_len=2048) == []


def test_the_smallest_length_key_is_the_model_length_as_vllm_takes_it() -> None:
    config = {"n_positions": 1024, "max_position_embeddings": 2048, "seq_len": 4096}
    assert derived_length(config, ()) == ("n_positions", 1024)
    assert "1024 tokens (n_positions" in check(config, max_len=1025)[0]


@pytest.mark.parametrize("config,files", [
    ({**LLAMA, "rope_scaling": {"rope_type": "linear", "factor": 4.0}}, ()),
    ({**LLAMA, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, ()),
    ({**LLAMA, "model_max_length": 131072}, ()),
    (LLAMA, ("sentence_bert_config.json",)),
    ({"model_type": "llama", "num_attention_heads": 32}, ()),          # no length key
    ({**LLAMA, "text_config": {"max_position_embeddings": 65536}}, ()),
    ({**LLAMA, "max_seq_len": "long"}, ()),
    ({**LLAMA, "max_seq_len": float("nan")}, ()),
], ids=["rope-scaling", "llama3-rope", "model-max-length", "sentence-transformers",
        "no-length-key", "text-config", "non-number", "nan"])
def test_lengths_vllm_may_derive_longer_refuse_nothing(config: dict[str, Any],
                                                         files: tuple[str, ...]) -> None:
    assert check(config, max_len=8192, files=files) == []


def test_both_problems_are_named_together() -> None:
    found = check(LLAMA, 6, 10_000)
    assert [problem.split(":")[0] for problem in found] == [
        "spec.resources.gpu.count", "spec.serving.maxModelLen"]


def test_flags_are_read_as_rendered() -> None:
    args = ["--model=/mnt/modelcar/models", "--tensor-parallel-size=4", "--max-model-len=2048"]
    assert flag_value(args, "--tensor-parallel-size") == 4
    assert flag_value(args, "--max-model-len") == 2048
    assert flag_value(args, "--gpu-memory-utilization") is None
