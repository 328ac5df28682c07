from __future__ import annotations

import pytest
from pydantic import ValidationError

from promoter.core.problems import describe
from promoter.core.spec import deep_merge, intent_from_tags, resolve

DEFAULTS = {"runtime": "kserve", "resources": {"cpu": "1", "memory": "2Gi"},
            "scaling": {"minReplicas": 1, "maxReplicas": 2}}
INTENT = {"spec": {"model": {"name": "Fraud Detector", "version": "7"},
                   "owner": {"team": "risk", "costCenter": "cc-1"},
                   "resources": {"memory": "8Gi"},
                   "environments": {"production": {"scaling": {"maxReplicas": 9}}}}}


def test_precedence_defaults_env_intent_overrides() -> None:
    env_defaults = {"scaling": {"minReplicas": 3, "maxReplicas": 4}}
    production = resolve(defaults=DEFAULTS, intent=INTENT, environment="production",
                         environment_defaults=env_defaults)
    assert production.spec.resources.cpu == "1"          # promoter.yaml default
    assert production.spec.resources.memory == "8Gi"     # intent beats defaults
    assert production.spec.scaling.min_replicas == 3     # environment default
    assert production.spec.scaling.max_replicas == 9     # intent's env override wins
    staging = resolve(defaults=DEFAULTS, intent=INTENT, environment="staging",
                      environment_defaults=env_defaults)
    assert staging.spec.scaling.max_replicas == 4
    assert production.name == "fraud-detector"          # derived from the registered name


def test_deep_merge_replaces_lists_and_merges_maps() -> None:
    assert deep_merge({"a": {"x": 1, "y": [1]}}, {"a": {"y": [2]}}) == {"a": {"x": 1, "y": [2]}}


def test_tags_become_a_partial_intent() -> None:
    tags = {"deploy.runtime": "deployment", "deploy.resources.gpu.count": "2",
            "deploy.regions": "us-east-1, eu-west-1", "deploy.name": "fd", "other": "x"}
    document = intent_from_tags(tags)
    assert document == {"metadata": {"name": "fd"}, "spec": {
        "runtime": "deployment", "resources": {"gpu": {"count": "2"}},
        "regions": "us-east-1, eu-west-1"}}
    resolved = resolve(defaults=DEFAULTS, intent=deep_merge(INTENT, document), environment=None)
    assert resolved.spec.resources.gpu.count == 2
    assert resolved.spec.regions == ("eu-west-1", "us-east-1")


def test_conflicting_tags_are_refused_naming_both_tags() -> None:
    with pytest.raises(ValueError, match=r"^tag 'deploy\.resources\.gpu\.type' conflicts with "
                                         r"tag 'deploy\.resources\.gpu'$"):
        intent_from_tags({"deploy.resources.gpu": "1", "deploy.resources.gpu.type": "A100"})
    # The value sits higher up than the new tag's parent: that tag is the one named.
    with pytest.raises(ValueError, match=r"with tag 'deploy\.resources'$"):
        intent_from_tags({"deploy.resources": "big", "deploy.resources.gpu.type": "A100"})



@pytest.mark.parametrize(("cpu", "memory"), [("8 ", "160Gi\t"), (" 500m", "\n4Gi "),
                                             ("\u00a02", "1Ti\u2028")])
def test_padded_quantities_are_kept_without_the_padding(cpu: str, memory: str) -> None:
    """The validated value is the one rendered into requests and limits, where Kubernetes
    refuses surrounding whitespace: it was checked stripped but kept padded."""
    patch = {"spec": {"resources": {"cpu": cpu, "memory": memory}}}
    resources = resolve(defaults=DEFAULTS, intent=deep_merge(INTENT, patch),
                        environment=None).spec.resources
    assert (resources.cpu, resources.memory) == (cpu.strip(), memory.strip())

@pytest.mark.parametrize(("patch", "field"), [
    ({"resources": {"gpu": {"count": -1}}}, "spec.resources.gpu.count"),
    ({"resources": {"gpu": {"count": 10000}}}, "spec.resources.gpu.count"),
    ({"resources": {"memory": "lots"}}, "spec.resources.memory"),
    ({"resources": {"cpu": "0"}}, "spec.resources.cpu"),
    ({"scaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.scaling"),
    ({"owner": {"team": "Risk Team!"}}, "spec.owner.team"),
    ({"runtime": "Lambda Functions"}, "spec.runtime"),
    ({"colour": "red"}, "spec.colour"),
])
def test_bad_values_name_their_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        resolve(defaults=DEFAULTS, intent=deep_merge(INTENT, {"spec": patch}), environment=None)
    problems = describe(caught.value)
    assert any(line.startswith(field + ":") for line in problems), problems
