"""`promoter gitops policy`: a kustomization path is judged as kustomize reads it, or denied.

kustomize reads a kustomization with go-yaml: ``._5`` (or ``2001-12-14``) is the text of a
path there. The gate read kustomizations with ruamel's default reader, which takes ``._5`` for
the float 0.5 (and ``2001-12-14`` for a date), and its walk looked only at text entries, so
``resources: [._5]`` with ``._5`` a link to a base outside the tree passed the gate while
kustomize built that outside base. An annotation ``note: +_`` ended the gate with
"unexpected error: ValueError". The walk now reads with the go-yaml-like core schema, and any
path entry that is not text (a number, true/false, null, a mapping) is denied by name.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from promoter.core.kustomize_refs import misread_paths, referenced_paths
from tests.conftest import EXAMPLES, ROOT, cli_runner, requires_kubectl

GOLDEN = ROOT / "tests/golden"
OVERLAY = "fraud-detector/overlays/staging"


def _policy(capsys: pytest.CaptureFixture[str], tree: Path) -> tuple[int, str]:
    code, out, err = cli_runner(capsys)("--config", str(EXAMPLES / "promoter.yaml"),
                                         "gitops", "policy", str(tree))
    return code, out + err


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(GOLDEN / "fraud-detector.staging", tree)
    return tree


def _resource_instead_of_the_base(tree: Path, entry: str) -> Path:
    kustomization = tree / OVERLAY / "kustomization.yaml"
    text = kustomization.read_text()
    assert "\n- ../../base\n" in text
    kustomization.write_text(text.replace("\n- ../../base\n", f"\n- {entry}\n"))
    return kustomization


def _built(overlay: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                          text=True, check=False)


@requires_kubectl
@pytest.mark.parametrize("name", ["._5", "2001-12-14"])
def test_a_path_another_yaml_reader_takes_for_a_number_is_judged_as_kustomize_reads_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    """The reproduction: a link named ``._5`` to a base outside the tree."""
    tree = _tree(tmp_path)
    outside = tmp_path / "outside_base"
    shutil.copytree(tree / "fraud-detector/base", outside)
    kustomization = _resource_instead_of_the_base(tree, name)
    (tree / OVERLAY / name).symlink_to(outside)
    assert _built(tree / OVERLAY).returncode == 0   # kustomize reads it as a path and builds
    code, output = _policy(capsys, tree)
    assert code == 4, output
    assert f"{kustomization} references {name!r} ({outside})" in output
    assert "outside the manifests tree" in output


@requires_kubectl
def test_an_annotation_another_reader_cannot_build_leaves_the_gate_passing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``+_`` is text to go-yaml (kustomize, Argo CD); it was a ValueError for the gate."""
    tree = _tree(tmp_path)
    kustomization = tree / OVERLAY / "kustomization.yaml"
    text = kustomization.read_text()
    kustomization.write_text(text.replace("commonAnnotations:\n",
                                          "commonAnnotations:\n  note: +_\n"))
    assert "note: +_" in _built(tree / OVERLAY).stdout
    code, output = _policy(capsys, tree)
    assert (code, "unexpected error" in output) == (0, False), output
    assert f"ok    {tree / OVERLAY}" in output


@requires_kubectl
@pytest.mark.parametrize(("entry", "directory", "shown"), [
    ("5", "5", "5"), ("0o17", "0o17", "15"), ("true", "true", "True"),
    ("~", "null", "None"), ("{path: b}", "b", "{'path': 'b'}")])
def test_a_path_entry_that_is_not_text_is_denied(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, directory: str,
        shown: str) -> None:
    """Not skipped: the walk judges only text, so it denies what it cannot judge (kustomize
    fails on most such entries; the gate does not rely on that)."""
    tree = _tree(tmp_path)
    outside = tmp_path / "outside_base"
    shutil.copytree(tree / "fraud-detector/base", outside)
    kustomization = _resource_instead_of_the_base(tree, entry)
    (tree / OVERLAY / directory).symlink_to(outside)
    code, output = _policy(capsys, tree)
    assert code == 4, output
    assert f"{kustomization} has {shown} at resources[0], where kustomize reads text" \
        in " ".join(output.split()), output


def test_every_path_field_holding_no_text_is_listed() -> None:
    """Each place referenced_paths reads a path, holding a number, true/false, null or a
    mapping; a list or mapping field of another shape."""
    kustomization = {
        "resources": [5, "a.yaml"], "components": [True], "bases": [None], "crds": [{}],
        "configurations": [1.5], "patchesStrategicMerge": [{"kind": "X"}],
        "patches": [{"path": 1}, {"patch": "inline"}], "patchesJson6902": [{"path": None}],
        "replacements": [{"path": False}],
        "configMapGenerator": [{"files": [7], "envs": [8], "env": 9}],
        "secretGenerator": ["s.txt"], "openapi": {"path": 2},
        "helmGlobals": {"chartHome": 3},
        "helmCharts": [{"valuesFile": 4, "additionalValuesFiles": "w.yaml", "repo": 6}],
        "helmChartInflationGenerator": [{"chartHome": 10, "values": 11, "chartRepoUrl": 12}]}
    assert misread_paths(kustomization) == [
        ("resources[0]", 5, "text"), ("components[0]", True, "text"),
        ("bases[0]", None, "text"), ("crds[0]", {}, "text"), ("configurations[0]", 1.5, "text"),
        ("patchesStrategicMerge[0]", {"kind": "X"}, "text"), ("patches[0].path", 1, "text"),
        ("patchesJson6902[0].path", None, "text"), ("replacements[0].path", False, "text"),
        ("configMapGenerator[0].files[0]", 7, "text"),
        ("configMapGenerator[0].envs[0]", 8, "text"),
        ("configMapGenerator[0].env", 9, "text"), ("secretGenerator[0]", "s.txt", "a mapping"),
        ("openapi.path", 2, "text"), ("helmGlobals.chartHome", 3, "text"),
        ("helmCharts[0].valuesFile", 4, "text"),
        ("helmCharts[0].additionalValuesFiles", "w.yaml", "a list"),
        ("helmCharts[0].repo", 6, "text"),
        ("helmChartInflationGenerator[0].chartHome", 10, "text"),
        ("helmChartInflationGenerator[0].values", 11, "text"),
        ("helmChartInflationGenerator[0].chartRepoUrl", 12, "text")]
    assert referenced_paths(kustomization) == ["a.yaml"]
    assert misread_paths({"resources": "../../base", "openapi": "schema.json"}) == [
        ("resources", "../../base", "a list"), ("openapi", "schema.json", "a mapping")]
