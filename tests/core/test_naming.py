from __future__ import annotations

import pytest

from promoter.core.naming import MAX_NAME_LENGTH, derive_name, name_problem


@pytest.mark.parametrize(("model_name", "expected"), [
    ("Fraud Detector_v2", "fraud-detector-v2"),
    ("fraud-detector", "fraud-detector"),
    ("  LLM   Chat!! ", "llm-chat"),
    ("vision/segmenter-xl", "vision-segmenter-xl"),
    ("Zürich Ränker", "zurich-ranker"),
    ("3d-pose", "m-3d-pose"),
    ("../../etc/passwd", "etc-passwd"),
    ("a" * 300, "a" * MAX_NAME_LENGTH),
    ("模型", ""),
])
def test_derive_name(model_name: str, expected: str) -> None:
    assert derive_name(model_name) == expected
    if expected:
        assert name_problem(expected) is None


@pytest.mark.parametrize("bad", ["../evil", "a/b", "Upper", "with space", "ünï", "x" * 300, "",
                                 "-lead", "trail-", "9lives", "dots.in.name"])
def test_bad_names_are_refused(bad: str) -> None:
    assert name_problem(bad) is not None
