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


@pytest.mark.parametrize(("pod", "deployment"), [
    ("llm-chat-6b8d4f9c7-x7k2q", "llm-chat"),                  # a Deployment's pod
    ("llm-chat-predictor-6b8d4f9c7-x7k2q", "llm-chat"),        # KServe's predictor
    ("llm-chat-70b-5f7c9d-d2k4q", "llm-chat-70b"),
])
def test_a_pod_belongs_to_the_deployment_its_pattern_selects(pod: str, deployment: str) -> None:
    """cost --by model names KServe's pods by their model, not `<model>-predictor`; and the
    pod pattern of that deployment selects the pod, as Prometheus' anchored =~ does."""
    import re

    from promoter.core.naming import deployment_of_pod, pods_pattern

    assert deployment_of_pod(pod) == deployment
    assert re.fullmatch(pods_pattern(deployment), pod)
