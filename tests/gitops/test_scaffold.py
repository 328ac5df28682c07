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
from promoter.core.gitops_scaffold import notification_body, render_scaffold
from promoter.errors import ConfigError
from promoter.gitops.scaffold import inputs_from_settings, repository_globs
from promoter.settings import load_settings
from promoter.signing import simple
from promoter.signing.keys import SigningKey, generate_key_pair, load_public_key, load_signing_key
from tests.conftest import ROOT, cli_runner, requires_kubectl
from tests.gitops import gotemplate

PASSWORD = "scaffold-test"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
CLUSTERS = [  # Argo CD cluster secrets as the cluster generator sees them
    {"name": "gpu-eu-1", "server": "https://10.0.0.1",
     "labels": {"gpu": "true", "env": "production", "topology.kubernetes.io/region": "eu-west-1"}},
    {"name": "gpu-us-1", "server": "https://10.0.0.2",
     "labels": {"gpu": "true", "env": "production", "topology.kubernetes.io/region": "us-east-1"}},
    {"name": "gpu-stg-1", "server": "https://10.0.0.3",
     "labels": {"gpu": "true", "env": "staging", "topology.kubernetes.io/region": "eu-west-1"}},
    {"name": "cpu-stg-1", "server": "https://10.0.0.4", "labels": {"env": "staging"}},
    # as `argocd cluster add` names a cluster after an EKS kube context: normalized, longer
    # than a label value may be (63)
    {"name": "arn:aws:eks:eu-west-1:123456789012:cluster/ml-inference-gpu-production-eu-2",
     "server": "https://10.0.0.5",
     "labels": {"gpu": "true", "env": "production", "topology.kubernetes.io/region": "eu-west-1"}},
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
  modelcar_repository: registry.example.com/modelcars
  verification_key: {keys['pub']}
argocd:
  repo_url: https://gitlab.example.com/platform/gitops.git
policy:
  teams:
    ads-relevance: {{}}
    assistants: {{environments: [staging]}}
    devtools: {{}}
    perception: {{namespaces: [models-staging, models-production]}}
    risk-ml: {{environments: [production], namespaces: [models-production]}}
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
    assert sorted(kinds) == ["AppProject"] * 5 + ["ApplicationSet", "ClusterImagePolicy",
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
    """Argo CD's git generator with goTemplate: a files entry gives the file's top-level keys
    as they are (not flattened) plus ``path`` (its directory, segments, basename, filename),
    as applicationset/generators/git.go does; a directories entry gives ``path`` only."""
    params = []
    for pattern in generator.get("files", []):
        for file in sorted(tree.glob(pattern["path"])):
            relative = file.parent.relative_to(tree).as_posix()
            content = YAML(typ="safe").load(file.read_text()) or {}
            params.append({**content, "path": {"path": relative, "segments": relative.split("/"),
                                               "basename": file.parent.name,
                                               "filename": file.name}})
    for pattern in generator.get("directories", []):
        for directory in sorted(tree.glob(pattern["path"])):
            relative = directory.relative_to(tree).as_posix()
            params.append({"path": {"path": relative, "segments": relative.split("/"),
                                    "basename": directory.name}})
    return params


def _sanitize_name(name: str) -> str:
    """Argo CD's SanitizeName, the cluster generator's ``nameNormalized``
    (argoproj/argo-cd applicationset/utils/template_functions.go @37ee0097)."""
    return re.sub(r"[^-a-z0-9.]", "-", name.lower())[:253].strip("-.")


def _cluster_params(generator: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": c["name"], "nameNormalized": _sanitize_name(c["name"]),
             "server": c["server"], "metadata": {"labels": c["labels"]},
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
    eks = "arn-aws-eks-eu-west-1-123456789012-cluster-ml-inference-gpu-production-eu-2"
    assert names == sorted([f"{m}-production-gpu-eu-1" for m in models_in["production"]]
                           + [f"{m}-production-{eks}" for m in models_in["production"]]
                           + [f"{m}-staging-gpu-stg-1" for m in models_in["staging"]])
    for application in applications:
        assert problems(application) == [], application["metadata"]["name"]
        assert DNS_SUBDOMAIN.fullmatch(application["metadata"]["name"])
        assert all(LABEL_VALUE.fullmatch(value)
                   for value in application["metadata"]["labels"].values()), application
        # The cluster, which a label could not hold, is an annotation the notification reads.
        cluster = application["metadata"]["annotations"]["promoter.dev/cluster"]
        assert application["metadata"]["name"].endswith(f"-{cluster}")
        synced = {**application, "status": {
            "sync": {"status": "Synced", "revision": "a" * 40}, "health": {"status": "Healthy"},
            "reconciledAt": "2026-12-02T05:00:00Z"}}
        body = json.loads(gotemplate.render(notification_body("sync-succeeded"),
                                            {"app": synced}))
        assert body["cluster"] == cluster
        spec, labels = application["spec"], application["metadata"]["labels"]
        env = labels["promoter.dev/environment"]
        assert spec["destination"]["namespace"] == f"models-{env}"
        assert spec["source"]["path"] == f"manifests/{labels['promoter.dev/model']}/overlays/{env}"
        subprocess.run(["kubectl", "kustomize", str(ROOT / spec["source"]["path"])],
                       capture_output=True, check=True)


def _team(overlay: Path) -> str:
    return str(YAML(typ="safe").load((overlay / "kustomization.yaml").read_text())
               ["commonAnnotations"]["promoter.dev/team"])


def _permits(project: dict[str, Any], server: str, resource: dict[str, Any]) -> bool:
    """Argo CD's project check for one resource of an Application: its group/kind on the
    whitelist, and (server, its namespace) matching one destination (globs allowed)."""
    spec = project["spec"]
    group = resource["apiVersion"].rpartition("/")[0]
    kinds = {(k["group"], k["kind"]) for k in spec["namespaceResourceWhitelist"]}
    namespace = resource["metadata"].get("namespace")
    return (group, resource["kind"]) in kinds and any(
        fnmatch.fnmatchcase(server, d["server"]) and fnmatch.fnmatchcase(namespace, d["namespace"])
        for d in spec["destinations"])


@requires_kubectl
def test_each_application_lands_in_its_teams_project_which_admits_only_its_namespaces(
        scaffold: Path) -> None:
    (applicationset,) = _documents(scaffold / "argocd/applicationset.yaml")
    projects = {p["metadata"]["name"]: p for p in _documents(scaffold / "argocd/appproject.yaml")}
    assert sorted(projects) == ["models-ads-relevance", "models-assistants", "models-devtools",
                                "models-perception", "models-risk-ml"]
    assert {ns for p in projects.values() for ns in
            [d["namespace"] for d in p["spec"]["destinations"]]} == {"models-staging",
                                                                       "models-production"}
    assert [d["namespace"] for d in projects["models-assistants"]["spec"]["destinations"]] == [
        "models-staging"]
    assert [d["namespace"] for d in projects["models-risk-ml"]["spec"]["destinations"]] == [
        "models-production"]
    seen = set()
    for application in expand(applicationset, ROOT):
        path = ROOT / application["spec"]["source"]["path"]
        team = _team(path)
        assert application["spec"]["project"] == f"models-{team}"
        project = projects[application["spec"]["project"]]
        assert project["spec"]["sourceRepos"] == [application["spec"]["source"]["repoURL"]]
        built = [d for d in YAML(typ="safe").load_all(subprocess.run(
            ["kubectl", "kustomize", str(path)], capture_output=True, text=True,
            check=True).stdout) if d]
        server = application["spec"]["destination"]["server"]
        env = application["metadata"]["labels"]["promoter.dev/environment"]
        # the team-permission gate's verdict, enforced by Argo CD through the project
        allowed = not ((team == "assistants" and env == "production")
                       or (team == "risk-ml" and env == "staging"))
        assert all(_permits(project, server, r) for r in built) is allowed, (team, env)
        for other, other_project in projects.items():
            if other != application["spec"]["project"] and not any(
                    d["namespace"] == built[0]["metadata"]["namespace"]
                    for d in other_project["spec"]["destinations"]):
                assert not any(_permits(other_project, server, r) for r in built)
        seen.add((team, env))
    assert ("assistants", "production") in seen and ("risk-ml", "staging") in seen


def test_an_overlay_of_an_unknown_team_gets_no_existing_project(scaffold: Path,
                                                                tmp_path: Path) -> None:
    (applicationset,) = _documents(scaffold / "argocd/applicationset.yaml")
    tree = tmp_path / "tree"
    overlay = tree / "manifests/rogue/overlays/staging"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        "namespace: models-staging\ncommonAnnotations:\n  promoter.dev/team: intruders\n")
    (application,) = expand(applicationset, tree)
    projects = {p["metadata"]["name"] for p in _documents(scaffold / "argocd/appproject.yaml")}
    assert application["spec"]["project"] == "models-intruders"
    assert application["spec"]["project"] not in projects   # Argo CD refuses to sync it


def test_project_whitelist_is_exactly_the_kinds_promoter_renders() -> None:
    from promoter.core.gitops_scaffold import NAMESPACED_KINDS
    from promoter.core.prewarm import Bounds, Reactive, scaled_object

    rendered = set()
    for template in (ROOT / "templates").rglob("*.yaml.j2"):
        text = template.read_text()
        api = re.search(r"^apiVersion: (\S+)$", text, re.M)
        kind = re.search(r"^kind: (\S+)$", text, re.M)
        if api and kind and kind.group(1) != "Kustomization":
            rendered.add((api.group(1).strip('"').rpartition("/")[0], kind.group(1)))
    keda = scaled_object(name="m", target="m", bounds=Bounds(1, 2, 1.0), timezone="UTC",
                         windows_=(), reactive=Reactive("http://p", "rate", 1.0))
    rendered.add((keda["apiVersion"].rpartition("/")[0], keda["kind"]))
    assert set(NAMESPACED_KINDS) == rendered


def _policy_controller_glob(glob: str, image: str) -> bool:
    """policy-controller's glob.Match for a fully qualified reference, as upstream compiles it
    (sigstore/policy-controller pkg/apis/glob/glob.go @56d8219): ``*`` is any run of non-``/``
    characters, ``**`` any run at all, matched against the whole reference, tag or digest
    included."""
    pattern = (glob.replace(".", r"\.").replace("**", "#").replace("*", "[^/]*")
               .replace("#", ".*"))
    return re.fullmatch(pattern, image) is not None


def _kyverno_glob(pattern: str, image: str) -> bool:
    """Kyverno's imageReferences wildcard: ``*`` is any run of characters, ``/`` included."""
    return fnmatch.fnmatchcase(image, pattern)


DIGEST = "sha256:" + "ab" * 32
# Where the config above makes promoter push: the serving image per model, and the modelcars
# in one shared repository (no {name}); pods name them by digest, people sometimes by tag.
PUSHED = ["registry.example.com/models/fraud-detector", "registry.example.com/modelcars"]
NEIGHBOURS = ["registry.example.com/other/fraud-detector", "registry.example.com/modelcars-old",
              "registry.example.com/modelcars/nested"]


@pytest.mark.parametrize(("repository", "pushed", "neighbour"), [
    ("registry.example.com/models/{name}", "registry.example.com/models/iris",
     "registry.example.com/models-old/iris"),
    ("registry.example.com/models", "registry.example.com/models",
     "registry.example.com/models-old"),
    ("registry.example.com/{name}/serving", "registry.example.com/iris/serving",
     "registry.example.com/iris/other"),
])
def test_repository_globs_cover_every_tag_and_digest_of_the_repository(
        repository: str, pushed: str, neighbour: str) -> None:
    globs = repository_globs(repository)
    for image in (f"{pushed}@{DIGEST}", f"{pushed}:v3", f"{pushed}:modelcar-v3"):
        assert any(_policy_controller_glob(g, image) for g in globs), (image, globs)
        assert any(_kyverno_glob(g, image) for g in globs), (image, globs)
    for image in (f"{neighbour}@{DIGEST}", f"{neighbour}:v3"):
        assert not any(_policy_controller_glob(g, image) for g in globs), (image, globs)


def test_clusterimagepolicy_key_and_globs_match_what_promoter_signs(
        scaffold: Path, keys: dict[str, Path]) -> None:
    (policy,) = _documents(scaffold / "policies/clusterimagepolicy.yaml")
    (kyverno,) = _documents(scaffold / "policies/kyverno-verify-images.yaml")
    globs = [image["glob"] for image in policy["spec"]["images"]]
    verify_images = kyverno["spec"]["rules"][0]["verifyImages"][0]
    for repository in PUSHED:
        for image in (f"{repository}@{DIGEST}", f"{repository}:v3"):
            assert any(_policy_controller_glob(g, image) for g in globs), (image, globs)
            assert any(_kyverno_glob(g, image)
                       for g in verify_images["imageReferences"]), image
    for repository in NEIGHBOURS:
        assert not any(_policy_controller_glob(g, f"{repository}@{DIGEST}") for g in globs)
    reference, digest = PUSHED[0], DIGEST

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


@pytest.mark.parametrize(("remote", "expected"), [
    ("https://oauth2:glpat-ScaffoldTok3n@gitlab.example.com/platform/gitops.git",
     "https://gitlab.example.com/platform/gitops.git"),
    ("https://glpat-ScaffoldTok3n@gitlab.example.com/platform/gitops.git",
     "https://gitlab.example.com/platform/gitops.git"),
    ("ssh://git:glpat-ScaffoldTok3n@gitlab.example.com/platform/gitops.git",
     "ssh://git@gitlab.example.com/platform/gitops.git"),
    ("ssh://git@gitlab.example.com/platform/gitops.git",
     "ssh://git@gitlab.example.com/platform/gitops.git")])
def test_the_git_remote_credential_stays_out_of_the_argocd_manifests(
        config: Path, remote: str, expected: str) -> None:
    """Without argocd.repo_url the manifests name git.remote, which may carry the token promoter
    pushes with; Argo CD reads credentials from its repository Secret, so they are taken out
    (an SSH login name is not a credential and stays)."""
    config.write_text(config.read_text().replace(
        "argocd:\n  repo_url: https://gitlab.example.com/platform/gitops.git\n", ""))
    settings = load_settings(config, environ={"PROMOTER_GIT_REMOTE": remote})
    files = render_scaffold(inputs_from_settings(settings))
    assert files
    assert not [path for path, text in files.items() if "ScaffoldTok3n" in str(text)]
    assert any(expected in str(text) for text in files.values())


@pytest.mark.parametrize("repo_url", [
    "https://oauth2:glpat-ScaffoldTok3n@gitlab.example.com/platform/gitops.git",
    "https://glpat-ScaffoldTok3n@gitlab.example.com/platform/gitops.git",
    "ssh://git:glpat-ScaffoldTok3n@gitlab.example.com/platform/gitops.git"])
def test_an_argocd_repo_url_with_credentials_is_refused(config: Path, repo_url: str) -> None:
    config.write_text(config.read_text().replace(
        "repo_url: https://gitlab.example.com/platform/gitops.git", f"repo_url: {repo_url}"))
    with pytest.raises(ConfigError, match=r"argocd\.repo_url must not carry credentials") \
            as caught:
        load_settings(config, environ={})
    assert "ScaffoldTok3n" not in str(caught.value)


def test_sync_notifications_fire_once_per_sync_operation_not_per_repository_commit(
        scaffold: Path) -> None:
    """The GitOps repository is shared by every model, so its HEAD (status.sync.revision)
    moves with every commit; Argo CD's catalog triggers key sync results on the operation's
    revision instead (argoproj/argo-cd notifications_catalog/triggers/on-sync-succeeded.yaml)."""
    (config_map,) = _documents(scaffold / "argocd/notifications.yaml")
    triggers = {key: YAML(typ="safe").load(value)
                for key, value in config_map["data"].items() if key.startswith("trigger.")}
    assert triggers
    for name, trigger in triggers.items():
        (rule,) = trigger
        if name.startswith("trigger.promoter-sync-"):
            assert rule["oncePer"] == "app.status.operationState?.syncResult?.revision", name
        elif name == "trigger.promoter-deleted":
            # As the catalog's on-deleted (notifications_catalog/triggers/on-deleted.yaml).
            assert rule == {"when": "app.metadata.deletionTimestamp != nil",
                            "oncePer": "app.metadata.name", "send": ["promoter-deleted"]}
        else:
            assert "oncePer" not in rule, name
