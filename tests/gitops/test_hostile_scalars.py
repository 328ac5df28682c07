"""Text a model owner typed reaches the CI gates through `kustomize build`, which writes it with
go-yaml v3: plain whenever go-yaml reads it back as a string. The gates must read it so too.

A description or registered-model name of ``._`` (or ``+_``, ``-_``, ``<<``, ``=`` …) once ended
`promoter validate`, `gitops images` and `gitops policy` with "unexpected error: ValueError"
or "not YAML" on every later merge request, and ``._5`` came back as the float 0.5, a false
schema problem.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from promoter import rendering
from promoter.core.render import ImagePin
from promoter.settings import load_settings
from promoter.yaml_read import load_documents
from tests.conftest import EXAMPLES, cli_runner, requires_kubectl

pytestmark = requires_kubectl

# Plain to go-yaml (it resolves each to a string) but numbers, merge keys or "value" tags to a
# YAML 1.2 reader with ruamel's extras (underscores, `<<`, `=`).
HOSTILE = ("._", "+_", "-_", "-._", ".__", "<<", "=", "._5", ".0_")
CONFIG = EXAMPLES / "promoter.yaml"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fraud-detector rendered once per hostile text (as its description and registered-model
    name), each under its own deployment name, staging and production."""
    settings = load_settings(CONFIG, environ={})
    example = (EXAMPLES / "fraud-detector.yaml").read_text()
    root = tmp_path_factory.mktemp("hostile") / "manifests"
    sources = tmp_path_factory.mktemp("intents")
    for number, hostile in enumerate(HOSTILE):
        text = (example
                .replace("  name: fraud-detector\n", f"  name: fraud-{number}\n")
                .replace('    name: "Fraud Detector"\n', f"    name: {_quoted(hostile)}\n")
                .replace("  description: Gradient-boosted fraud scores for card transactions.\n",
                         f"  description: {_quoted(hostile)}\n"))
        intent_file = sources / f"fraud-{number}.yaml"
        intent_file.write_text(text)
        intent = rendering.load_intent_file(intent_file)
        image = ImagePin(f"registry.example.com/models/fraud-{number}", "sha256:" + "ab" * 32)
        for env in ("staging", "production"):
            request = rendering.build_request(settings, intent, env, origin="test", image=image)
            rendering.write_tree(root, rendering.renderer(settings).render(request))
    return root


def test_kustomize_writes_the_hostile_texts_plain(tree: Path) -> None:
    """The premise: go-yaml leaves them unquoted (else this test proves nothing)."""
    built = subprocess.run(["kubectl", "kustomize", str(tree / "fraud-0/overlays/staging")],
                           capture_output=True, text=True, check=True).stdout
    assert "promoter.dev/description: ._\n" in built


def test_each_text_reads_back_as_the_exact_string(tree: Path) -> None:
    for number, hostile in enumerate(HOSTILE):
        for env in ("staging", "production"):
            built = subprocess.run(
                ["kubectl", "kustomize", str(tree / f"fraud-{number}/overlays/{env}")],
                capture_output=True, text=True, check=True).stdout
            documents = load_documents(built, what="kustomize output")
            deployment = next(d for d in documents if d["kind"] == "Deployment")
            annotations = deployment["metadata"]["annotations"]
            assert annotations["promoter.dev/description"] == hostile
            assert annotations["promoter.dev/registered-model"] == hostile


def test_validate_passes_the_tree(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_runner(capsys)("--config", str(CONFIG), "validate", str(tree))
    assert code == 0, out + err
    assert "unexpected" not in err


def test_the_image_gate_passes_the_tree(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_runner(capsys)("--config", str(CONFIG), "gitops", "images", str(tree))
    assert code == 0, err
    assert sorted(out.split()) == sorted(
        f"registry.example.com/models/fraud-{number}@sha256:{'ab' * 32}"
        for number in range(len(HOSTILE)))


def test_the_policy_gate_passes_the_tree(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_runner(capsys)("--config", str(CONFIG), "gitops", "policy", str(tree),
                                        "--output", "json")
    assert code == 0, err
    verdicts = json.loads(out)
    assert len(verdicts) == 2 * len(HOSTILE)
    assert all(verdict["allowed"] for verdict in verdicts), verdicts
