"""config.pbtxt from MLflow signatures, as the modelcar for the triton runtime holds it."""

from __future__ import annotations

import json

import pytest

from promoter.core.triton import config_pbtxt, layout
from promoter.errors import UserError


def tensor(name: str, dtype: str, shape: list[int]) -> dict[str, object]:
    return {"type": "tensor", "name": name, "tensor-spec": {"dtype": dtype, "shape": shape}}


# As an MLmodel file stores it: each side a JSON string.
SIGNATURE = {"inputs": json.dumps([tensor("features", "float32", [-1, 13]),
                                   tensor("ids", "int64", [-1, 4, -1])]),
             "outputs": json.dumps([tensor("score", "float32", [-1])])}


def test_tensor_signature_with_batching() -> None:
    assert config_pbtxt("ad-ranker", SIGNATURE, model_format="onnx", max_batch_size=64) == (
        'name: "ad-ranker"\n'
        'platform: "onnxruntime_onnx"\n'
        "max_batch_size: 64\n"
        "input [\n"
        "  {\n"
        '    name: "features"\n'
        "    data_type: TYPE_FP32\n"
        "    dims: [ 13 ]\n"
        "  },\n"
        "  {\n"
        '    name: "ids"\n'
        "    data_type: TYPE_INT64\n"
        "    dims: [ 4, -1 ]\n"
        "  }\n"
        "]\n"
        "output [\n"
        "  {\n"
        '    name: "score"\n'
        "    data_type: TYPE_FP32\n"
        "    dims: [ 1 ]\n"
        "    reshape: { shape: [ ] }\n"
        "  }\n"
        "]\n")


def test_without_batching_the_full_shape_is_kept_and_tensorrt_names_its_platform() -> None:
    text = config_pbtxt("m", SIGNATURE, model_format="tensorrt")
    assert 'platform: "tensorrt_plan"' in text and "max_batch_size: 0" in text
    assert "dims: [ -1, 13 ]" in text and "dims: [ -1 ]" in text


def test_column_signature_becomes_one_tensor_per_column() -> None:
    signature = {"inputs": [{"type": "double", "name": "amount"},
                            {"type": "string", "name": "merchant"}],
                 "outputs": [{"type": "long", "name": "label"}]}
    text = config_pbtxt("fraud", signature, model_format="onnx")
    assert text.count("dims: [ 1 ]") == 3
    for fact in ("TYPE_FP64", "TYPE_STRING", "TYPE_INT64", 'name: "merchant"'):
        assert fact in text


@pytest.mark.parametrize(("signature", "message"), [
    (None, "signature does not list them"),
    ({"inputs": SIGNATURE["inputs"]}, "signature does not list them"),
    ({"inputs": "not json", "outputs": "[]"}, "inputs are not JSON"),
    ({"inputs": [{"type": "double"}], "outputs": [{"type": "long", "name": "y"}]},
     "needs a name"),
    ({"inputs": [tensor("x", "complex128", [-1])], "outputs": [tensor("y", "float32", [-1])]},
     "type Triton cannot take"),
    # the owner's data, not crashes a job would retry (downloading the model each time)
    ({"inputs": [tensor("x", "float32", [-1, "a"])], "outputs": [tensor("y", "float32", [-1])]},
     "'x' has a shape Triton cannot take"),
    ({"inputs": [tensor("x", "float32", [-1, 10**22])],
      "outputs": [tensor("y", "float32", [-1])]}, "has a shape Triton cannot take"),
    ({"inputs": [tensor("x", "float32", [-1, 1e400])],
      "outputs": [tensor("y", "float32", [-1])]}, "has a shape Triton cannot take"),
    ({"inputs": [{"type": "tensor", "name": "x", "tensor-spec": "oops"}],
      "outputs": [tensor("y", "float32", [-1])]}, "'x' has a tensor-spec that is not a mapping"),
    # Configs Triton refuses to load (ValidateIOShape, triton core model_config_utils.cc):
    # "dimension must be integer >= 1, or -1" ...
    ({"inputs": [tensor("x", "float32", [-1, 0])], "outputs": [tensor("y", "float32", [-1])]},
     "'x' has a shape Triton cannot take"),
    # ... and "cannot have empty reshape for non-batching model" (a scalar is dims [1] + an
    # empty reshape, which only a batching model may have).
    ({"inputs": [tensor("x", "float32", [-1, 4]), tensor("threshold", "float32", [])],
      "outputs": [tensor("y", "float32", [-1])]}, "'threshold' is a scalar"),
    ({"inputs": [{"type": "tensor", "name": "x", "tensor-spec": {"dtype": "float32"}}],
      "outputs": [tensor("y", "float32", [-1])]}, "'x' is a scalar \\(or has no shape\\)"),
])
def test_a_signature_triton_cannot_use_is_named(signature: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        config_pbtxt("m", signature, model_format="onnx")  # type: ignore[arg-type]


def test_batching_needs_a_variable_first_dimension() -> None:
    fixed = {"inputs": [tensor("x", "float32", [8, 3])], "outputs": [tensor("y", "float32", [8])]}
    with pytest.raises(UserError, match="no variable batch dimension"):
        config_pbtxt("m", fixed, model_format="onnx", max_batch_size=8)


def test_hostile_tensor_names_stay_inside_their_string() -> None:
    name = 'x"\n}\ninput [ {name: "evil'
    signature = {"inputs": [tensor(name, "float32", [-1])],
                 "outputs": [tensor("y", "float32", [-1])]}
    text = config_pbtxt("m", signature, model_format="onnx")
    assert 'name: "x\\"\\012}\\012input [ {name: \\"evil"' in text
    assert [line for line in text.splitlines() if line.startswith("input")] == ["input ["]


def test_layout_places_config_and_model_as_triton_expects() -> None:
    assert layout("ad-ranker", "21", "onnx") == {
        "config": "models/ad-ranker/config.pbtxt", "model": "models/ad-ranker/21/model.onnx"}
    assert layout("m", "1", "tensorrt")["model"] == "models/m/1/model.plan"


@pytest.mark.parametrize("name", ["../../../etc/cron.d", "/etc", "a/b", ""])
def test_layout_refuses_a_name_that_is_not_one_directory(name: str) -> None:
    with pytest.raises(UserError, match="Triton model name"):
        layout(name, "1", "onnx")
