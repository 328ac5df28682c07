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


@pytest.mark.parametrize(("patch", "field"), [
    ({"resources": {"gpu": {"count": True}}}, "spec.resources.gpu.count"),
    ({"scaling": {"minReplicas": True}}, "spec.scaling.minReplicas"),
    ({"scaling": {"maxReplicas": True}}, "spec.scaling.maxReplicas"),
    ({"scaling": {"target": True}}, "spec.scaling.target"),
    ({"serving": {"maxModelLen": True}}, "spec.serving.maxModelLen"),
    ({"serving": {"gpuMemoryUtilization": True}}, "spec.serving.gpuMemoryUtilization"),
    ({"serving": {"maxBatchSize": False}}, "spec.serving.maxBatchSize"),
])
def test_a_boolean_is_not_taken_for_a_number(patch: dict[str, object], field: str) -> None:
    """pydantic's lax mode read `true` as 1 (`gpu.count: true` rendered one GPU); numbers
    written as text, as MLflow tags give them, are still numbers."""
    with pytest.raises(ValidationError) as caught:
        resolve(defaults=DEFAULTS, intent=deep_merge(INTENT, {"spec": patch}), environment=None)
    assert f"{field}: must be a number, not true or false (got " in "\n".join(
        describe(caught.value))
    as_text = {"resources": {"gpu": {"count": "2", "type": "x"}},
               "scaling": {"minReplicas": "2", "maxReplicas": "3", "target": "50"},
               "serving": {"maxModelLen": "4096", "gpuMemoryUtilization": "0.5"}}
    spec = resolve(defaults=DEFAULTS, intent=deep_merge(INTENT, {"spec": as_text}),
                   environment=None).spec
    assert (spec.resources.gpu.count, spec.scaling.min_replicas, spec.scaling.target,
            spec.serving.max_model_len, spec.serving.gpu_memory_utilization) == (
        2, 2, 50, 4096, 0.5)


@pytest.mark.parametrize(("gpu", "says"), [
    ({"type": "NVIDIA-L40S"}, "type NVIDIA-L40S with count 0 requests no GPU"),
    ({"mig": "1g.10gb"}, "mig 1g.10gb with count 0 requests no GPU"),
    ({"count": 0, "type": "NVIDIA-A100", "mig": "3g.40gb"},
     "type NVIDIA-A100 and mig 3g.40gb with count 0 requests no GPU")])
def test_a_gpu_type_or_profile_without_a_count_is_refused_not_rendered_cpu_only(
        gpu: dict[str, object], says: str) -> None:
    """``gpu: {type: …}`` without a count (default 0) rendered pods with no GPU, no node
    selector and a passing GPU-type policy, with nothing saying so."""
    with pytest.raises(ValidationError) as caught:
        resolve(defaults=DEFAULTS, intent=deep_merge(INTENT, {"spec": {"resources": {
            "gpu": gpu}}}), environment=None)
    assert any(line.startswith("spec.resources.gpu:") and says in line
               for line in describe(caught.value)), describe(caught.value)


def test_a_cpu_only_environment_drops_the_gpu_type_it_inherits() -> None:
    intent = deep_merge(INTENT, {"spec": {
        "resources": {"gpu": {"count": 1, "type": "NVIDIA-T4"}},
        "environments": {"staging": {"resources": {"gpu": {"count": 0, "type": None}}}}}})
    staging = resolve(defaults=DEFAULTS, intent=intent, environment="staging")
    assert (staging.spec.resources.gpu.count, staging.spec.resources.gpu.type) == (0, None)
    assert resolve(defaults=DEFAULTS, intent=intent,
                   environment="production").spec.resources.gpu.type == "NVIDIA-T4"


def test_a_default_gpu_type_applies_only_to_deployments_that_ask_for_a_gpu() -> None:
    """promoter.yaml's defaults may name the GPU type a GPU deployment gets; a CPU-only
    intent (count 0) keeps it out rather than being refused for it."""
    defaults = deep_merge(DEFAULTS, {"resources": {"gpu": {"type": "NVIDIA-H100", "mig": None}}})
    cpu_only = resolve(defaults=defaults, intent=INTENT, environment="production",
                       environment_defaults={"resources": {"gpu": {"mig": "1g.10gb"}}})
    assert cpu_only.spec.resources.gpu.model_dump() == {"count": 0, "type": None, "mig": None}
    with_gpu = resolve(defaults=defaults, intent=deep_merge(INTENT, {"spec": {"resources": {
        "gpu": {"count": 2}}}}), environment=None)
    assert (with_gpu.spec.resources.gpu.count, with_gpu.spec.resources.gpu.type) == (
        2, "NVIDIA-H100")


def _intent_paths() -> set[str]:
    """Every ``spec.<field>…`` path an intent can hold, spelled as users write them (aliases)."""
    from pydantic import BaseModel

    from promoter.core.spec import Spec

    paths: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path = f"{prefix}.{field.alias or name}"
            paths.add(path)
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                walk(kind, path)

    walk(Spec, "spec")
    return paths


def test_every_intent_path_named_in_promoters_messages_exists() -> None:
    """Hints tell users which intent field to set; a path that does not exist (a hint once
    said ``spec.runtime.maxBatchSize``, and ``runtime`` is a string) sends them to write an
    intent that is refused. Paths into other objects' specs (a Deployment's ``spec.template``,
    an Application's ``spec.destination``) start with a name that is no intent field."""
    import ast
    import re
    from pathlib import Path

    import promoter

    real = _intent_paths()
    fields = {path.split(".")[1] for path in real}
    named: dict[str, str] = {}
    for source in Path(promoter.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for path in re.findall(r"\bspec(?:\.[A-Za-z]+)+", node.value):
                    if path.split(".")[1] in fields:
                        named.setdefault(path, source.name)
    assert named, "the scan found no intent paths at all: it is looking in the wrong place"
    assert {path: where for path, where in named.items() if path not in real} == {}
