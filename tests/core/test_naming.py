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


def _generated_pod(replicaset: str, suffix: str = "x7k2q") -> str:
    """A ReplicaSet's pod name as the apiserver makes it from generateName ``<rs>-``: the base
    cut to 58 characters (SimpleNameGenerator, 63 - 5), then 5 random characters."""
    return f"{replicaset}-"[:58] + suffix


@pytest.mark.parametrize("length", [8, 36, 37, 40, 44, 45])
@pytest.mark.parametrize("template_hash", ["7d9f8b6c54", "6b8d4f9c7", "5f7c9d"])
@pytest.mark.parametrize("kserve", [False, True])
def test_long_names_pods_are_selected_where_kubernetes_cut_the_hash(
        length: int, template_hash: str, kserve: bool) -> None:
    """From a 37-character name on, KServe's ``<name>-predictor-<hash>-`` no longer fits the
    58 characters before the random suffix: Kubernetes cuts the hash and its dash. Those pods
    still belong to the model (KEDA triggers, forecasts, right-sizing, cost), and only its."""
    import re

    from promoter.core.naming import MAX_NAME_LENGTH, deployment_of_pod, pods_pattern

    assert length <= MAX_NAME_LENGTH
    name = ("m" + "odel-" * 9)[:length - 1] + "x"
    deployment = f"{name}-predictor" if kserve else name
    pod = _generated_pod(f"{deployment}-{template_hash}")
    assert re.fullmatch(pods_pattern(name), pod), pod
    assert deployment_of_pod(pod) == name
    # A model whose name extends this one's is not taken in.
    longer = f"{name[:length - 2]}-b" if length > 40 else f"{name}-b"
    other = _generated_pod(f"{longer}-predictor-{template_hash}" if kserve
                           else f"{longer}-{template_hash}")
    assert not re.fullmatch(pods_pattern(name), other), other


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


@pytest.mark.parametrize("suffix", ["-predictor", "-transformer", "-explainer"])
def test_a_name_ending_in_a_kserve_component_suffix_is_refused(suffix: str) -> None:
    """KServe names InferenceService foo's Deployment, Service and HPA ``foo-predictor``
    (and -transformer, -explainer): a model named so would render objects of those names
    in the same namespace, and KServe and Argo CD would fight over them."""
    from promoter.core.naming import suggest_name

    problem = name_problem(f"foo{suffix}")
    assert problem is not None and "KServe" in problem and suffix in problem
    assert name_problem(suggest_name(f"Foo{suffix}")) is None
    assert name_problem(f"foo{suffix}-v2") is None   # inside the name it is harmless


@pytest.mark.parametrize("other", ["foo-predictor", "foo-predictor-v2", "foo-predictor2",
                                   "foo-x", "foo-transformer", "foo-explainer-b"])
def test_no_valid_name_s_pods_are_taken_for_another_model_s(other: str) -> None:
    """pods_pattern("foo") takes in KServe's ``foo-predictor-…`` pods; a deployment named
    ``foo-predictor`` (a plain Deployment) would have pods of exactly that shape, so forecasts,
    KEDA, right-sizing and cost would absorb them. With that name refused, every valid name's
    pods are selected by its own pattern only, and deployment_of_pod names it."""
    import re

    from promoter.core.naming import deployment_of_pod, pods_pattern

    pod = f"{other}-7d9f8c6b5-x7k2q"
    if name_problem(other) is None:
        assert not re.fullmatch(pods_pattern("foo"), pod)
        assert deployment_of_pod(pod) == other
        assert re.fullmatch(pods_pattern(other), pod)
    elif re.fullmatch(pods_pattern("foo"), pod):
        assert deployment_of_pod(pod) == "foo"   # only ever KServe's pod of model foo
