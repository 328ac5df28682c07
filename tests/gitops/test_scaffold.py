"""`promoter gitops init`: the scaffolding validates, builds, expands, guards what is signed."""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from promoter.adapters.schemas import problems
from promoter.signing import simple
from promoter.signing.keys import SigningKey, generate_key_pair, load_public_key, load_signing_key
from tests.conftest import ROOT, cli_runner, requires_kubectl
from tests.gitops import gotemplate

PASSWORD = "scaffold-test"
CLUSTERS = [  # Argo CD cluster secrets as the cluster generator sees them
    {"name": "gpu-eu-1", "server": "https://10.0.0.1",
     "labels": {"gpu": "true", "env": "production", "topology.kubernetes.io/region": "eu-west-1"}},
    {"name": "gpu-us-1", "server": "https://10.0.0.2",
     "labels": {"gpu": "true", "env": "production", "topology.kubernetes.io/region": "us-east-1"}},
    {"name": "gpu-stg-1", "server": "https://10.0.0.3",
     "labels": {"gpu": "true", "env": "staging", "topology.kubernetes.io/region": "eu-west-1"}},
    {"name": "cpu-stg-1", "server": "https://10.0.0.4", "labels": {"env": "staging"}},
]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    private, public = generate_key_pair(PASSWORD)
    other_private, _ = generate_key_pair(PASSWORD)
    paths = {"key": tmp_path / "cosign.key", "pub": tmp_path / "cosign.pub",
             "other": tmp_path / "other.key"}
    paths["key"].write_bytes(private)
    paths["pub"].write_bytes(public)
    paths["other"].write_bytes(other_private)
    return paths


@pytest.fixture
def config(tmp_path: Path, keys: dict[str, Path]) -> Path:
    path = tmp_path / "promoter.yaml"
    path.write_text(f"""
state_dir: {tmp_path / 'state'}
environments:
  staging:
    trigger: {{alias: staging}}
    namespace: models-staging
    cluster_selector: {{gpu: "true", env: staging}}
  production:
    trigger: {{alias: production}}
    namespace: models-production
    cluster_selector: {{gpu: "true", env: production}}
    allowed_regions: [eu-west-1]
image:
  repository: registry.example.com/models/{{name}}
  verification_key: {keys['pub']}
argocd:
  repo_url: https://gitlab.example.com/platform/gitops.git
""")
    return path


@pytest.fixture
def scaffold(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "gitops"
    code, _, err = cli_runner(capsys)("--config", str(config), "gitops", "init", "--out", str(out))
    assert code == 0, err
    return out


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(path.read_text()) if d]


def test_every_generated_resource_matches_its_schema(scaffold: Path) -> None:
    kinds = []
    for path in sorted(scaffold.glob("*/*.yaml")):
        for document in _documents(path):
            if document["kind"] == "Kustomization":
                continue
            kinds.append(document["kind"])
            assert problems(document) == [], path
    assert sorted(kinds) == ["AppProject", "ApplicationSet", "ClusterImagePolicy",
                             "ClusterPolicy", "ConfigMap"]


@requires_kubectl
@pytest.mark.parametrize("directory", ["argocd", "policies"])
def test_generated_directories_build_with_kustomize(scaffold: Path, directory: str) -> None:
    built = subprocess.run(["kubectl", "kustomize", str(scaffold / directory)],
                           capture_output=True, text=True, check=True).stdout
    for document in YAML(typ="safe").load_all(built):
        assert problems(document) == []


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _git_params(tree: Path, generator: dict[str, Any]) -> list[dict[str, Any]]:
    params = []
    for pattern in generator["directories"]:
        for directory in sorted(tree.glob(pattern["path"])):
            relative = directory.relative_to(tree).as_posix()
            params.append({"path": {"path": relative, "segments": relative.split("/"),
                                    "basename": directory.name}})
    return params


def _cluster_params(generator: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": c["name"], "server": c["server"], "metadata": {"labels": c["labels"]},
             "values": generator.get("values", {})}
            for c in CLUSTERS if _selects(generator["selector"], c["labels"])]


def _render(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return gotemplate.render(value, params, missingkey_error=True)
    if isinstance(value, dict):
        return {_render(k, params): _render(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, params) for v in value]
    return value


def expand(applicationset: dict[str, Any], tree: Path) -> list[dict[str, Any]]:
    """The Applications Argo CD's matrix(git directories, clusters) generators make."""
    applications = []
    for generator in applicationset["spec"]["generators"]:
        git, clusters = generator["matrix"]["generators"]
        for left, right in itertools.product(_git_params(tree, git["git"]),
                                             _cluster_params(clusters["clusters"])):
            application = _render(applicationset["spec"]["template"], {**left, **right})
            applications.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                                 **application})
    return applications


@requires_kubectl
def test_applicationset_expands_to_buildable_applications_on_selected_clusters(
        scaffold: Path) -> None:
    (applicationset,) = _documents(scaffold / "argocd/applicationset.yaml")
    applications = expand(applicationset, ROOT)
    names = sorted(app["metadata"]["name"] for app in applications)
    overlays = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("manifests/*/overlays/*"))
    models_in = {env: sorted(p.split("/")[1] for p in overlays if p.endswith("/" + env))
                 for env in ("staging", "production")}
    # production: only the eu-west-1 GPU cluster (allowed_regions); staging: only GPU clusters
    assert names == sorted([f"{m}-production-gpu-eu-1" for m in models_in["production"]]
                           + [f"{m}-staging-gpu-stg-1" for m in models_in["staging"]])
    for application in applications:
        assert problems(application) == [], application["metadata"]["name"]
        spec, labels = application["spec"], application["metadata"]["labels"]
        env = labels["promoter.dev/environment"]
        assert spec["destination"]["namespace"] == f"models-{env}"
        assert spec["source"]["path"] == f"manifests/{labels['promoter.dev/model']}/overlays/{env}"
        subprocess.run(["kubectl", "kustomize", str(ROOT / spec["source"]["path"])],
                       capture_output=True, check=True)


def _policy_controller_glob(glob: str, reference: str) -> bool:
    """policy-controller's glob: ``*`` stays within one path segment, ``**`` crosses them."""
    pattern = re.escape(glob).replace(r"\*\*", ".+").replace(r"\*", "[^/]+")
    return re.fullmatch(pattern, reference) is not None


def _pushed_reference(name: str) -> str:
    # as promoter.image.service names the pushed repository from image.repository
    return "registry.example.com/models/{name}".replace("{name}", name)


def test_clusterimagepolicy_key_and_globs_match_what_promoter_signs(
        scaffold: Path, keys: dict[str, Path]) -> None:
    (policy,) = _documents(scaffold / "policies/clusterimagepolicy.yaml")
    (kyverno,) = _documents(scaffold / "policies/kyverno-verify-images.yaml")
    reference = _pushed_reference("fraud-detector")
    digest = "sha256:" + "ab" * 32
    globs = [image["glob"] for image in policy["spec"]["images"]]
    assert any(_policy_controller_glob(g, reference) for g in globs)
    assert not any(_policy_controller_glob(g, "registry.example.com/other/fraud-detector")
                   for g in globs)
    verify_images = kyverno["spec"]["rules"][0]["verifyImages"][0]
    assert any(fnmatch.fnmatchcase(reference, g) for g in verify_images["imageReferences"])

    # What promoter signs: cosign's simple-signing payload for the pushed digest.
    payload = simple.payload(reference, digest)
    signed = load_signing_key(keys["key"].read_bytes(), PASSWORD).sign(payload)
    by_other: SigningKey = load_signing_key(keys["other"].read_bytes(), PASSWORD)
    for pem in ([a["key"]["data"] for a in policy["spec"]["authorities"]]
                + [e["keys"]["publicKeys"] for e in verify_images["attestors"][0]["entries"]]):
        key = load_public_key(pem.encode())
        assert key.verifies(signed, payload)
        assert not key.verifies(by_other.sign(payload), payload)


def test_rerun_is_idempotent_and_keeps_hand_edits_outside_the_block(
        scaffold: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli_runner(capsys)
    codeowners = scaffold / "CODEOWNERS"
    codeowners.write_text(codeowners.read_text() + "/manifests/fraud-detector/ @risk-ml\n")
    ci = scaffold / ".gitlab-ci.yml"
    ci.write_text("# our own note\n" + ci.read_text().replace("stages:", "stages:  # edited"))
    project = scaffold / "argocd/appproject.yaml"
    project.write_text("kind: AppProject  # written by hand, no markers\n")
    code, out, _ = run("--config", str(config), "gitops", "init", "--out", str(scaffold),
                       "--output", "json")
    assert code == 0
    report = json.loads(out)
    assert report["written"] == [".gitlab-ci.yml"]      # the edit inside the block is undone
    assert report["skipped"] == ["argocd/appproject.yaml"]
    assert "CODEOWNERS" in report["unchanged"]
    assert codeowners.read_text().endswith("/manifests/fraud-detector/ @risk-ml\n")
    assert ci.read_text().startswith("# our own note\n")
    assert "# edited" not in ci.read_text()
    assert project.read_text() == "kind: AppProject  # written by hand, no markers\n"
    code, out, _ = run("--config", str(config), "gitops", "init", "--out", str(scaffold),
                       "--output", "json")
    assert json.loads(out)["written"] == []


def test_init_refuses_without_a_public_key(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("image: {repository: \"registry.example.com/models/{name}\"}\n")
    code, _, err = cli_runner(capsys)("--config", str(config), "gitops", "init", "--out",
                                      str(tmp_path / "out"))
    assert code == 1
    assert "image.verification_key" in err
