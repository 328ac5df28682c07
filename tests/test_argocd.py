"""The Argo CD wiring and our own CI file are valid against their upstream schemas."""

from __future__ import annotations

import json

import jsonschema
import pytest
from ruamel.yaml import YAML

from promoter.adapters.schemas import problems
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["appproject.yaml", "applicationset.yaml",
                                  "clusterimagepolicy.yaml"])
def test_argocd_resources_match_their_crd_schemas(name: str) -> None:
    document = YAML(typ="safe").load((ROOT / "argocd" / name).read_text())
    assert problems(document) == []


def test_applicationset_pairs_overlays_with_labelled_gpu_clusters() -> None:
    document = YAML(typ="safe").load((ROOT / "argocd/applicationset.yaml").read_text())
    git, clusters = document["spec"]["generators"][0]["matrix"]["generators"]
    assert git["git"]["directories"] == [{"path": "manifests/*/overlays/*"}]
    assert clusters["clusters"]["selector"]["matchLabels"]["gpu"] == "true"


def test_gitlab_ci_file_matches_gitlab_schema() -> None:
    schema = json.loads((ROOT / "tests/data/gitlab-ci.schema.json").read_text())
    document = YAML(typ="safe").load((ROOT / ".gitlab-ci.yml").read_text())
    jsonschema.validate(document, schema)
