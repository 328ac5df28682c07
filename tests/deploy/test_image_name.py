"""The image the deploy base runs is the one promoter's CI pushes: `image:build` pushes
$PROMOTER_IMAGE, GitLab's $CI_REGISTRY_IMAGE (registry host + project path) with a suffix, and
the project is the one deploy/argocd/application.yaml syncs from."""

from __future__ import annotations

from urllib.parse import urlsplit

from ruamel.yaml import YAML

from tests.conftest import ROOT

REGISTRY_HOST = "registry.gitlab.example.com"   # GitLab's registry beside gitlab.example.com


def _yaml(path: str) -> dict:
    return YAML(typ="safe", pure=True).load((ROOT / path).read_text())


def test_the_deploy_base_runs_the_image_ci_pushes() -> None:
    source = _yaml("deploy/argocd/application.yaml")["spec"]["source"]["repoURL"]
    project = urlsplit(source).path.strip("/").removesuffix(".git")
    ci_registry_image = f"{REGISTRY_HOST}/{project}"
    pushed = _yaml(".gitlab-ci.yml")["image:build"]["variables"]["PROMOTER_IMAGE"]
    pushed = pushed.replace("$CI_REGISTRY_IMAGE", ci_registry_image)
    [image] = [i for i in _yaml("deploy/base/kustomization.yaml")["images"]
               if i["name"] == "promoter"]
    assert image["newName"] == pushed
    assert f"-t {pushed}:" in (ROOT / "README.md").read_text()   # the README's build example
