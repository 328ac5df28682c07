"""argocd/: the reference scaffolding is what `promoter gitops init` writes for
examples/promoter.yaml, every resource in it matches its CRD schema and builds with Kustomize;
and both .gitlab-ci.yml files are valid against GitLab's CI schema."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from promoter.adapters.schemas import problems
from promoter.gitops.scaffold import plan
from promoter.settings import load_settings
from tests.conftest import EXAMPLES, ROOT, requires_kubectl

REFERENCE = ROOT / "argocd/reference"


def _generated(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(EXAMPLES)  # image.verification_key: cosign.pub, relative to examples/
    return plan(load_settings(EXAMPLES / "promoter.yaml", environ={}), {}).files


def test_reference_scaffolding_is_what_gitops_init_writes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    generated = _generated(monkeypatch)
    shipped = {path.relative_to(REFERENCE).as_posix(): path.read_text()
               for path in REFERENCE.rglob("*") if path.is_file()}
    assert shipped == generated, ("argocd/reference is out of date: cd examples && "
                                  "promoter --config promoter.yaml gitops init --out "
                                  "../argocd/reference")


@pytest.mark.parametrize("path", sorted(p.relative_to(REFERENCE).as_posix()
                                        for p in REFERENCE.glob("*/*.yaml")))
def test_reference_resources_match_their_crd_schemas(path: str) -> None:
    for document in YAML(typ="safe").load_all((REFERENCE / path).read_text()):
        if document and document.get("kind") != "Kustomization":
            assert problems(document) == []


@requires_kubectl
@pytest.mark.parametrize("directory", ["argocd", "policies"])
def test_reference_directories_build_with_kustomize(directory: str) -> None:
    subprocess.run(["kubectl", "kustomize", str(REFERENCE / directory)], check=True,
                   capture_output=True)


def test_applicationset_pairs_overlays_with_each_environments_labelled_clusters() -> None:
    document = YAML(typ="safe").load((REFERENCE / "argocd/applicationset.yaml").read_text())
    pairs = {}
    for generator in document["spec"]["generators"]:
        git, clusters = generator["matrix"]["generators"]
        pairs[git["git"]["files"][0]["path"]] = clusters["clusters"]["selector"]
    assert pairs == {
        "manifests/*/overlays/production/kustomization.yaml": {"matchLabels": {
            "gpu": "true", "env": "production"}},
        "manifests/*/overlays/staging/kustomization.yaml": {"matchLabels": {
            "gpu": "true", "env": "staging"}}}
    assert document["spec"]["template"]["spec"]["project"] == (
        'models-{{index .commonAnnotations "promoter.dev/team"}}')


def test_reference_has_one_project_per_team_of_the_example_tree() -> None:
    projects = [d for d in YAML(typ="safe").load_all(
        (REFERENCE / "argocd/appproject.yaml").read_text()) if d]
    teams = {YAML(typ="safe").load(path.read_text())["commonAnnotations"]["promoter.dev/team"]
             for path in ROOT.glob("manifests/*/overlays/*/kustomization.yaml")}
    assert sorted(p["metadata"]["name"] for p in projects) == sorted(f"models-{t}" for t in teams)


@pytest.mark.parametrize("path", [ROOT / ".gitlab-ci.yml", REFERENCE / ".gitlab-ci.yml"])
def test_gitlab_ci_files_match_gitlab_schema(path: Path) -> None:
    schema = json.loads((ROOT / "tests/data/gitlab-ci.schema.json").read_text())
    jsonschema.validate(YAML(typ="safe").load(path.read_text()), schema)


def test_gitlab_ci_schema_rejects_a_broken_file() -> None:
    schema = json.loads((ROOT / "tests/data/gitlab-ci.schema.json").read_text())
    broken = YAML(typ="safe").load((ROOT / ".gitlab-ci.yml").read_text())
    broken["manifests:validate"]["rules"] = [{"if": 42}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_namespaces_argo_cd_creates_are_the_ones_policy_controller_enforces_in() -> None:
    """policy-controller checks images only in namespaces labelled
    policy.sigstore.dev/include=true: without it on the namespaces Argo CD creates
    (CreateNamespace=true), the ClusterImagePolicy admitted unsigned images there."""
    document = YAML(typ="safe").load((REFERENCE / "argocd/applicationset.yaml").read_text())
    sync = document["spec"]["template"]["spec"]["syncPolicy"]
    assert "CreateNamespace=true" in sync["syncOptions"]
    assert sync["managedNamespaceMetadata"]["labels"] == {"policy.sigstore.dev/include": "true"}
