"""`promoter gitops policy`: an overlay may read nothing outside the manifests tree.

The gate's CI job runs on changes under the tree, and judges the overlays they can affect: a
kustomization reading ``../../../../ext/gpu`` let a later merge request editing only ext/gpu
change what the overlay deploys (here: 8 GPUs on another product), unchecked. Such an overlay
is denied, naming the reference, however it is reached. So is a remote reference: Argo CD
rebuilds it from the live remote, which can change after the gate judged it, with no merge
request and no gate run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from promoter.core.kustomize_refs import (
    ENTRY_FIELDS,
    FIELDS,
    PATH_ENTRIES,
    PATH_LISTS,
    PLUGIN_FIELDS,
    is_remote,
    miscased_keys,
    plugin_entries,
    referenced_paths,
)
from promoter.gitops.policy import check_tree
from promoter.settings import load_settings
from tests.conftest import EXAMPLES, ROOT, requires_kubectl

GPU_COMPONENT = """apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
patches:
- target: {kind: InferenceService}
  patch: |-
    - {op: replace, path: /spec/predictor/maxReplicas, value: 50}
"""


def _built(overlay: Path) -> str:
    return subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                          text=True, check=True).stdout


def _repo(tmp_path: Path) -> Path:
    """A GitOps checkout: the reference manifests tree, and a component beside it."""
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    (tmp_path / "ext/gpu").mkdir(parents=True)
    (tmp_path / "ext/gpu/kustomization.yaml").write_text(GPU_COMPONENT)
    return tmp_path


def _add(kustomization: Path, field: str, reference: str | dict[str, str]) -> None:
    """``reference`` appended to ``field``'s list (created when the file has none)."""
    yaml = YAML()
    data = yaml.load(kustomization.read_text())
    data.setdefault(field, []).append(reference)
    with kustomization.open("w") as handle:
        yaml.dump(data, handle)


def _from_the_overlay(repo: Path) -> str:
    _add(repo / "manifests/llm-chat/overlays/production/kustomization.yaml", "components",
         "../../../../ext/gpu")
    return "../../../../ext/gpu"


def _from_the_base(repo: Path) -> str:
    _add(repo / "manifests/llm-chat/base/kustomization.yaml", "components", "../../../ext/gpu")
    return "../../../ext/gpu"


def _through_a_link_in_the_tree(repo: Path) -> str:
    (repo / "manifests/llm-chat/gpu").symlink_to(repo / "ext/gpu")
    _add(repo / "manifests/llm-chat/overlays/production/kustomization.yaml", "components",
         "../../gpu")
    return "../../gpu"


def _dot_dot_after_a_link_deeper_in(repo: Path) -> str:
    """`deep/../…` with `deep` a link to a directory deeper in the overlay: kustomize joins
    the path as text (`deep/..` cancels) and reaches ext/gpu; the OS, resolving `deep/..` by
    following the link first, named a directory that does not exist, which the gate skipped
    as missing (kustomize failing the build)."""
    overlay = repo / "manifests/llm-chat/overlays/production"
    (overlay / "a/b/c").mkdir(parents=True)
    (overlay / "deep").symlink_to("a/b/c")
    reference = "deep/../../../../../ext/gpu"
    _add(overlay / "kustomization.yaml", "components", reference)
    return reference


def _through_an_in_tree_component(repo: Path) -> str:
    """A shared component inside the tree, which itself reads ext/gpu."""
    shared = repo / "manifests/components/shared"
    shared.mkdir(parents=True)
    (shared / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
        "components:\n- ../../../ext/gpu\n")
    _add(repo / "manifests/llm-chat/overlays/production/kustomization.yaml", "components",
         "../../../components/shared")
    return "../../../ext/gpu"


@requires_kubectl
@pytest.mark.parametrize("refer", [_from_the_overlay, _from_the_base,
                                   _through_a_link_in_the_tree, _through_an_in_tree_component,
                                   _dot_dot_after_a_link_deeper_in])
def test_an_overlay_reading_outside_the_tree_is_denied(tmp_path: Path,
                                                       refer: Callable[[Path], str]) -> None:
    repo = _repo(tmp_path)
    reference = refer(repo)
    _built(repo / "manifests/llm-chat/overlays/production")   # kustomize itself builds it
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    verdicts = {v.overlay.relative_to(repo).as_posix(): v.decision
                for v in check_tree(settings, [repo / "manifests"], _built)}
    denied = verdicts["manifests/llm-chat/overlays/production"]
    assert not denied.allowed
    reason = " ".join(denied.reasons)
    assert f"references {reference!r}" in reason and "outside the manifests tree" in reason
    others = [decision for overlay, decision in verdicts.items()
              if not overlay.startswith("manifests/llm-chat/")]
    assert others and all(decision.allowed for decision in others)


@requires_kubectl
def test_a_shared_component_inside_the_tree_and_a_single_overlay_given_pass(
        tmp_path: Path) -> None:
    """Inside the tree anything may be shared; an overlay given alone reads its model's
    base/ (the tree is the ``<tree>/<model>/overlays/<env>`` layout's)."""
    repo = _repo(tmp_path)
    shared = repo / "manifests/components/gpu"
    shutil.copytree(repo / "ext/gpu", shared)
    overlay = repo / "manifests/llm-chat/overlays/production"
    _add(overlay / "kustomization.yaml", "components", "../../../components/gpu")
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    for root in (repo / "manifests", overlay):
        verdicts = check_tree(settings, [root], _built)
        assert verdicts and all(v.decision.allowed for v in verdicts), \
            [v.decision.reasons for v in verdicts]


def test_every_path_field_of_a_kustomization_is_listed() -> None:
    kustomization = {
        "resources": ["a.yaml", "https://example.com/x.yaml"], "components": ["../c"],
        "bases": ["../b"], "crds": ["crd.yaml"], "configurations": ["conf.yaml"],
        "generators": ["gen", "apiVersion: v1\nkind: X\n"], "transformers": ["t"],
        "validators": ["v"], "patchesStrategicMerge": ["psm.yaml"],
        "patches": [{"path": "p.yaml"}, {"patch": "inline"}],
        "patchesJson6902": [{"path": "j.yaml"}], "replacements": [{"path": "r.yaml"}],
        "configMapGenerator": [{"files": ["key=f.txt", "g.txt"], "envs": ["e.env"],
                                "env": "old.env"}],
        "secretGenerator": [{"files": ["s.txt"]}], "openapi": {"path": "schema.json"},
        "helmGlobals": {"chartHome": "charts"},
        "helmCharts": [{"valuesFile": "v.yaml", "additionalValuesFiles": ["w.yaml"],
                        "repo": "oci://registry.example.com/charts"}],
        "helmChartInflationGenerator": [{"chartHome": "old-charts", "values": "old.yaml",
                                         "chartRepoUrl": "https://charts.example.com"}]}
    assert referenced_paths(kustomization) == [
        "a.yaml", "https://example.com/x.yaml", "../c", "../b", "crd.yaml", "conf.yaml", "gen",
        "t", "v", "psm.yaml", "p.yaml", "j.yaml", "r.yaml", "f.txt", "g.txt", "e.env",
        "old.env", "s.txt", "schema.json", "charts", "v.yaml", "w.yaml",
        "oci://registry.example.com/charts", "old-charts", "old.yaml",
        "https://charts.example.com"]
    assert plugin_entries(kustomization) == [
        ("generators", "gen"), ("generators", "apiVersion: v1\nkind: X\n"),
        ("transformers", "t"), ("validators", "v")]


# --------------------------------------------- remote references

def _git_remote(tmp_path: Path) -> str:
    """A git repository outside the checkout holding the GPU component, as a kustomize remote
    reference (file://, fetched like any https one)."""
    remote = tmp_path / "remote-src"
    (remote / "gpu").mkdir(parents=True)
    (remote / "gpu/kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
        "commonAnnotations: {example.com/gpu: \"ok\"}\n")
    for command in (["init", "-q", "-b", "main"], ["add", "."],
                    ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "v1"]):
        subprocess.run(["git", "-C", str(remote), *command], check=True, capture_output=True)
    return f"file://{remote}//gpu?ref=main"


REMOTE_FORMS = {
    "a component by https": ("manifests/llm-chat/overlays/production", "components",
                             "https://github.com/org/gpu//component?ref=v1"),
    "a pinned resource on github.com": (
        "manifests/llm-chat/overlays/production", "resources",
        "github.com/org/repo//deploy?ref=0123456789abcdef0123456789abcdef01234567"),
    "a base by ssh (scp-style)": ("manifests/llm-chat/overlays/production", "bases",
                                  "git@gitlab.example.com:org/repo.git//base?ref=main"),
    "a raw file in the base": ("manifests/llm-chat/base", "resources",
                               "https://raw.example.com/org/repo/main/gpu.yaml"),
}


@requires_kubectl
def test_a_remote_reference_the_gate_once_built_is_denied(tmp_path: Path) -> None:
    """The repro: a component that only adds an annotation passed; a later commit in the
    remote alone could add a 4-GPU container, and nothing would judge it again."""
    repo = _repo(tmp_path)
    reference = _git_remote(tmp_path)
    overlay = repo / "manifests/llm-chat/overlays/production"
    _add(overlay / "kustomization.yaml", "components", reference)
    assert "example.com/gpu" in _built(overlay)   # kustomize itself fetches and builds it
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    verdicts = {v.overlay.relative_to(repo).as_posix(): v.decision
                for v in check_tree(settings, [repo / "manifests"], _built)}
    denied = verdicts["manifests/llm-chat/overlays/production"]
    reason = " ".join(denied.reasons)
    assert not denied.allowed
    assert f"{overlay / 'kustomization.yaml'} references {reference!r}" in reason
    assert "a remote reference" in reason and "vendor it under the tree" in reason
    others = [decision for path, decision in verdicts.items()
              if not path.startswith("manifests/llm-chat/")]
    assert others and all(decision.allowed for decision in others)


def _denied_before_it_is_built(repo: Path) -> str:
    """The gate's reasons for llm-chat's production overlay in ``repo``, which it must deny
    without building it (a build would fetch what the walk refuses)."""
    built: list[Path] = []

    def build(overlay: Path) -> str:
        built.append(overlay)
        return _built(overlay) if shutil.which("kubectl") else ""

    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    production = repo / "manifests/llm-chat/overlays/production"
    (verdict,) = check_tree(settings, [repo / "manifests"], build, [production])
    assert not verdict.decision.allowed and production not in built
    return " ".join(verdict.decision.reasons)


@pytest.mark.parametrize("form", sorted(REMOTE_FORMS))
def test_a_remote_reference_is_denied_in_any_field_before_it_is_fetched(
        tmp_path: Path, form: str) -> None:
    """Denied by how it is written, from the overlay or from the base it reads, before it is
    built (nothing is fetched)."""
    where, field, reference = REMOTE_FORMS[form]
    repo = _repo(tmp_path)
    _add(repo / where / "kustomization.yaml", field, reference)
    reason = _denied_before_it_is_built(repo)
    assert f"{repo / where / 'kustomization.yaml'} references {reference!r}, a remote " \
           "reference" in reason, reason


# A builtin plugin's config naming a remote patch: kustomize's loader fetches it at every build
# (the repro served nvidia.com/gpu: 8 this way, inline or from a listed file).
REMOTE_PATCH_CONFIG = ("apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: gpu}\n"
                       "target: {kind: InferenceService}\n"
                       "path: http://127.0.0.1:18777/patch.yaml\n")


def _inline_config(overlay: Path) -> str:
    _add(overlay / "kustomization.yaml", "transformers", REMOTE_PATCH_CONFIG)
    return "'apiVersion: builtin' (inline, ...) under 'transformers'"


def _listed_config_file(overlay: Path) -> str:
    (overlay / "gpu-transformer.yaml").write_text(REMOTE_PATCH_CONFIG)
    _add(overlay / "kustomization.yaml", "transformers", "gpu-transformer.yaml")
    return "'gpu-transformer.yaml' under 'transformers'"


def _listed_generator_file(overlay: Path) -> str:
    """A builtin ConfigMapGenerator's config file, its ``files`` fetched from a URL."""
    (overlay / "cm.yaml").write_text(
        "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: cm}\n"
        "files: [https://example.com/settings.json]\n")
    _add(overlay / "kustomization.yaml", "generators", "cm.yaml")
    return "'cm.yaml' under 'generators'"


def _a_validator(overlay: Path) -> str:
    _add(overlay / "kustomization.yaml", "validators", "validator.yaml")
    return "'validator.yaml' under 'validators'"


@pytest.mark.parametrize("configure", [_inline_config, _listed_config_file,
                                       _listed_generator_file, _a_validator])
def test_a_plugin_config_is_denied_before_it_is_built(
        tmp_path: Path, configure: Callable[[Path], str]) -> None:
    """Promoter renders no generators/transformers/validators, and a config there (inline or
    in a listed file) can name a remote patch or file kustomize fetches at every build, or run
    an exec/KRM plugin: every entry is denied, naming the file and the field, unbuilt."""
    repo = _repo(tmp_path)
    production = repo / "manifests/llm-chat/overlays/production"
    shown = configure(production)
    reason = _denied_before_it_is_built(repo)
    assert f"{production / 'kustomization.yaml'} lists {shown}" in reason, reason
    assert "promoter renders no generators, transformers or validators" in reason


# kustomize reads a kustomization through Go's encoding/json, which matches field names
# regardless of case (Unicode folding included): each of these is fetched by kustomize, while
# a walk reading fields as spelled saw nothing (the repro's ``Transformers:`` passed).
def _transformers_capitalised(repo: Path) -> tuple[str, str]:
    _add(repo / "manifests/llm-chat/overlays/production/kustomization.yaml", "Transformers",
         REMOTE_PATCH_CONFIG)
    return "manifests/llm-chat/overlays/production", "the key 'Transformers': kustomize " \
        "reads field names regardless of case, so it reads this as 'transformers'"


def _resources_capitalised_beside_resources(repo: Path) -> tuple[str, str]:
    _add(repo / "manifests/llm-chat/base/kustomization.yaml", "Resources",
         "https://raw.example.com/org/repo/main/gpu.yaml")
    return "manifests/llm-chat/base", "the key 'Resources': kustomize reads field names " \
        "regardless of case, so it reads this as 'resources'"


def _a_patch_path_capitalised(repo: Path) -> tuple[str, str]:
    _add(repo / "manifests/llm-chat/overlays/production/kustomization.yaml", "patches",
         {"Path": "http://127.0.0.1:18777/patch.yaml"})
    return "manifests/llm-chat/overlays/production", "the key 'Path' in patches[1]: " \
        "kustomize reads field names regardless of case, so it reads this as 'path'"


def _resources_with_a_long_s(repo: Path) -> tuple[str, str]:
    """Go folds \u017f (long s) into s, the Kelvin sign into k: ``re\u017fources`` is read."""
    _add(repo / "manifests/llm-chat/overlays/production/kustomization.yaml",
         "re\u017fources", "https://raw.example.com/org/repo/main/gpu.yaml")
    return "manifests/llm-chat/overlays/production", \
        "the non-ASCII key 're\u017fources': kustomize reads field names regardless of case"


@pytest.mark.parametrize("spell", [_transformers_capitalised,
                                   _resources_capitalised_beside_resources,
                                   _a_patch_path_capitalised, _resources_with_a_long_s])
def test_a_field_spelled_otherwise_is_denied_before_it_is_built(
        tmp_path: Path, spell: Callable[[Path], tuple[str, str]]) -> None:
    repo = _repo(tmp_path)
    where, shown = spell(repo)
    reason = _denied_before_it_is_built(repo)
    assert f"{repo / where / 'kustomization.yaml'} has {shown}" in reason, reason


def test_keys_kustomize_reads_as_another_spelling_are_listed() -> None:
    assert miscased_keys({
        "resources": [], "RESOURCES": [], "namePrefix": "x", "nameprefix": "y",
        "\u212aind": "Kustomization", "patches": [{"path": "a"}, {"PATH": "b", "x": 1}],
        "openapi": {"Path": "s.json"}, "helmCharts": [{"Repo": "oci://r"}],
        "configMapGenerator": [{"Files": ["f"]}], "commonLabels": {"Resources": "a"},
        7: "not a field"}) == [
        ("", "RESOURCES", "resources"), ("", "nameprefix", "namePrefix"),
        ("", "\u212aind", ""), ("patches[1]", "PATH", "path"),
        ("configMapGenerator[0]", "Files", "files"), ("openapi", "Path", "path"),
        ("helmCharts[0]", "Repo", "repo")]
    # Every field the walk reads is among those checked for another spelling.
    assert {*PATH_LISTS, *PATH_ENTRIES, *PLUGIN_FIELDS, *ENTRY_FIELDS} <= set(FIELDS)


@pytest.mark.parametrize("reference", [
    "https://example.com/x.yaml", "http://example.com/x.yaml", "file:///srv/repo//gpu",
    "ssh://git@host/org/repo", "git::https://host/org/repo", "gh:org/repo",
    "github.com/org/repo//dir?ref=v1", "GitHub.com:org/repo", "git@host:org/repo.git",
    "deploy@host/org/repo", "../base?x=https://host/"])
def test_remote_forms_are_remote(reference: str) -> None:
    assert is_remote(reference)


@pytest.mark.parametrize("reference", [
    "../../base", "patch-inferenceservice.yaml", "../../../components/gpu", "./hpa.yaml",
    "/abs/path", "github.com.yaml", "my-github.com/x"])
def test_local_paths_are_not_remote(reference: str) -> None:
    assert not is_remote(reference)


# base64 of "resources" and of a remote URL: kustomize's YAML reader decodes a !!binary node
# into the text it encodes, while the walk (reading strings only) skipped the bytes.
_BINARY = {
    "key": "? !!binary cmVzb3VyY2Vz\n: [https://example.invalid/evil/cm.yaml]\n",
    "value": "components:\n- !!binary aHR0cHM6Ly9leGFtcGxlLmludmFsaWQvZXZpbA==\n",
}


@pytest.mark.parametrize("node", sorted(_BINARY))
def test_a_binary_node_is_denied_before_it_is_built(tmp_path: Path, node: str) -> None:
    repo = _repo(tmp_path)
    kustomization = repo / "manifests/llm-chat/overlays/production/kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + _BINARY[node])
    reason = _denied_before_it_is_built(repo)
    assert f"{kustomization} holds a !!binary node: kustomize decodes it into text" \
        in reason, reason


# Two readings of one file. A line break in a path entry: the walk skipped it as inline YAML,
# kustomize still fetched the remote. A merge key after an explicit key: ruamel keeps the
# explicit one, kustomize's reader the later merged one.
_TWO_READINGS = {
    "line-break": ("components:\n- \"https://127.0.0.1:9/org/repo.git//dir?ref=main&x=\\n\"\n",
                   "lists 'https://127.0.0.1:9/org/repo.git//dir?ref=main&x=\\n' under "
                   "'components': a path holding a line break"),
    "merge-key": ("<<: {resources: [\"https://127.0.0.1:9/org/repo.git//dir?ref=main\"]}\n",
                  "holds a YAML merge key (<<)"),
}


@pytest.mark.parametrize("form", sorted(_TWO_READINGS))
def test_what_kustomize_reads_otherwise_than_the_walk_is_denied_unbuilt(
        tmp_path: Path, form: str) -> None:
    text, shown = _TWO_READINGS[form]
    repo = _repo(tmp_path)
    kustomization = repo / "manifests/llm-chat/overlays/production/kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + text)
    reason = _denied_before_it_is_built(repo)
    assert f"{kustomization} {shown}" in reason, reason

