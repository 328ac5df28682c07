"""`promoter render` and `promoter validate` as a user runs them, including every bad input."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import EXAMPLES, requires_kubectl

Run = Callable[..., tuple[int, str, str]]
CONFIG = str(EXAMPLES / "promoter.yaml")
VALID = {
    "apiVersion": "promoter.dev/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "fraud-detector"},
    "spec": {"model": {"name": "Fraud Detector", "version": "7"},
             "owner": {"team": "risk", "costCenter": "cc-1"}, "runtime": "deployment"},
}


def write_intent(path: Path, document: object) -> Path:
    with path.open("w") as handle:
        YAML(typ="safe").dump(document, handle)
    return path


def test_dry_run_prints_every_file_and_writes_nothing(run_cli: Run, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("render", "--intent", str(EXAMPLES / "llm-chat.yaml"),
                           "--env", "production", "--dry-run", "--config", CONFIG)
    assert code == 0
    for path in ("llm-chat/base/kustomization.yaml", "llm-chat/base/inferenceservice.yaml",
                 "llm-chat/overlays/production/kustomization.yaml"):
        assert f"--- # {path}" in out
    assert list(tmp_path.iterdir()) == [tmp_path / "state"] or not list(tmp_path.iterdir())


DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("example", "option", "pin"), [
    ("llm-chat", "--modelcar", f"registry.example/llm-chat@{DIGEST}"),
    ("ad-ranker", "--modelcar", f"registry.example/ad-ranker@{DIGEST}"),
    ("fraud-detector", "--image", f"registry.example/fraud-detector@{DIGEST}"),
])
def test_a_tree_without_its_signed_artifact_is_called_a_preview(
        run_cli: Run, tmp_path: Path, example: str, option: str, pin: str) -> None:
    """Written without the artifact a promotion pins, the tree cannot run (no storageUri, a
    placeholder or tagged image): it is still written, and the user is told so."""
    args = ("render", "--intent", str(EXAMPLES / f"{example}.yaml"), "--env", "production",
            "--config", CONFIG)
    code, _, err = run_cli(*args, "--out", str(tmp_path / "preview"))
    assert code == 0, err
    assert "warning: runtime " in err and f"pass {option} REPO@sha256:" in err
    code, _, err = run_cli(*args, "--out", str(tmp_path / "pinned"), option, pin)
    assert (code, err) == (0, "")
    rendered = "".join(path.read_text() for path in (tmp_path / "pinned").rglob("*.yaml"))
    assert DIGEST in rendered


@pytest.mark.parametrize(("example", "extra", "said"), [
    ("fraud-detector", ("--modelcar", f"registry.example/m@{DIGEST}"),
     "runtime deployment does not run a modelcar (pyfunc-image): --modelcar does not apply"),
    ("llm-chat", ("--image", f"registry.example/m@{DIGEST}"),
     "runtime vllm does not run the pyfunc image (modelcar): --image does not apply"),
    ("fraud-detector", ("--version", "9"), "--version goes with MODEL"),
])
def test_an_option_the_render_would_ignore_is_a_usage_error(
        run_cli: Run, tmp_path: Path, example: str, extra: tuple[str, str], said: str) -> None:
    """`--version 9` beside --intent rendered the file's version 7, and a pin the runtime
    does not run was dropped: exit 0 and a tree for another version, or with no artifact."""
    code, out, err = run_cli("render", "--intent", str(EXAMPLES / f"{example}.yaml"),
                             "--env", "production", "--dry-run", "--config", CONFIG, *extra)
    assert code == 2 and said in err and out == ""


@requires_kubectl
def test_out_writes_a_tree_that_validates(run_cli: Run, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    for env in ("staging", "production"):
        code, _, err = run_cli("render", "--intent", str(EXAMPLES / "fraud-detector.yaml"),
                               "--env", env, "--out", str(out), "--config", CONFIG)
        assert code == 0, err
    assert (out / "fraud-detector/overlays/staging/kustomization.yaml").is_file()
    code, stdout, _ = run_cli("validate", str(out))
    assert code == 0
    assert stdout.count("ok ") == 2


def test_out_keeps_an_accepted_scaled_object_in_the_overlay(run_cli: Run, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    args = ("render", "--intent", str(EXAMPLES / "fraud-detector.yaml"), "--env", "production",
            "--out", str(out), "--config", CONFIG)
    assert run_cli(*args)[0] == 0
    overlay = out / "fraud-detector" / "overlays" / "production"
    assert "- path: patch-horizontalpodautoscaler.yaml" in \
        (overlay / "kustomization.yaml").read_text()
    (overlay / "scaledobject.yaml").write_text(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: fraud-detector\n"
        "spec:\n  scaleTargetRef:\n    name: fraud-detector\n  minReplicaCount: 1\n"
        "  maxReplicaCount: 40\n  triggers: []\n")
    code, _, err = run_cli(*args)
    assert code == 0, err
    kustomization = (overlay / "kustomization.yaml").read_text()
    assert "- scaledobject.yaml" in kustomization
    assert "- path: patch-delete-horizontalpodautoscaler.yaml" in kustomization
    assert not (overlay / "patch-horizontalpodautoscaler.yaml").exists()
    assert "maxReplicaCount: 40" not in (overlay / "scaledobject.yaml").read_text()


@pytest.mark.parametrize(("intent", "accepted_target", "target"), [
    ("llm-chat", "llm-chat", "llm-chat-predictor"),              # kubernetes -> kserve
    ("fraud-detector", "fraud-detector-predictor", "fraud-detector"),   # kserve -> kubernetes
])
def test_a_carried_scaled_object_scales_the_current_platforms_workload(
        run_cli: Run, tmp_path: Path, intent: str, accepted_target: str, target: str) -> None:
    """Accepted while the model ran on the other platform: its scaleTargetRef names a
    workload that no longer exists, so the carried-forward copy must name the current one."""
    out = tmp_path / "manifests"
    args = ("render", "--intent", str(EXAMPLES / f"{intent}.yaml"), "--env", "production",
            "--out", str(out), "--config", CONFIG)
    assert run_cli(*args)[0] == 0
    overlay = out / intent / "overlays" / "production"
    (overlay / "scaledobject.yaml").write_text(
        f"apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {intent}\n"
        f"spec:\n  scaleTargetRef:\n    name: {accepted_target}\n  minReplicaCount: 1\n"
        "  maxReplicaCount: 4\n  triggers: []\n")
    code, _, err = run_cli(*args)
    assert code == 0, err
    carried = YAML(typ="safe").load((overlay / "scaledobject.yaml").read_text())
    assert carried["spec"]["scaleTargetRef"] == {"name": target}
    assert carried["metadata"] == {"name": intent}


@requires_kubectl
def test_validate_names_the_file_and_the_error(run_cli: Run, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    run_cli("render", "--intent", str(EXAMPLES / "fraud-detector.yaml"), "--env", "staging",
            "--out", str(out), "--config", CONFIG)
    patch = out / "fraud-detector/overlays/staging/patch-horizontalpodautoscaler.yaml"
    patch.write_text(patch.read_text().replace("maxReplicas: 2", "maxReplicas: many"))
    code, stdout, err = run_cli("validate", str(out))
    assert code == 1
    assert "FAIL" in stdout and "HorizontalPodAutoscaler/fraud-detector" in stdout
    assert "spec.maxReplicas" in stdout and "1 of 1 overlays failed" in err
    kustomization = out / "fraud-detector/overlays/staging/kustomization.yaml"
    kustomization.write_text("resources: [missing.yaml]\n")
    code, stdout, _ = run_cli("validate", str(out))
    assert code == 1 and "missing.yaml" in stdout


HOSTILE_TEXT = ["{a: b}", "\n- x", "&anchor", "!!python/object:os.system", "{{ 7*7 }}",
                "{% raw %}", "</script><!--"]


@requires_kubectl
@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_descriptions_and_model_names_render_inert(run_cli: Run, tmp_path: Path,
                                                           text: str) -> None:
    document = {**VALID, "spec": {**VALID["spec"], "description": text,
                                  "model": {"name": f"Fraud {text.strip()}", "version": "7"}}}
    intent = write_intent(tmp_path / "intent.yaml", document)
    out = tmp_path / "manifests"
    code, _, err = run_cli("render", "--intent", str(intent), "--env", "production",
                           "--out", str(out), "--config", CONFIG)
    assert code == 0, err
    code, stdout, _ = run_cli("validate", str(out), "--output", "json")
    assert code == 0, stdout
    overlay = out / "fraud-detector/overlays/production"
    built = subprocess.run(["kubectl", "kustomize", str(overlay)],
                           capture_output=True, text=True, check=True).stdout
    resources = list(YAML(typ="safe").load_all(built))
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    assert deployment["metadata"]["annotations"]["promoter.dev/description"] == text
    assert deployment["metadata"]["annotations"]["promoter.dev/registered-model"] == \
        f"Fraud {text.strip()}"
    assert "49" not in built  # {{ 7*7 }} was never evaluated


@pytest.mark.parametrize(("change", "expected"), [
    ({"metadata": {"name": "../evil"}}, "metadata.name: '../evil'"),
    ({"metadata": {"name": "a/b"}}, "metadata.name: 'a/b'"),
    ({"metadata": {"name": "Upper"}}, "try 'upper'"),
    ({"metadata": {"name": "has space"}}, "try 'has-space'"),
    ({"metadata": {"name": "ünïcode"}}, "try 'unicode'"),
    ({"metadata": {"name": "x" * 300}}, "is 300 characters long"),
    ({"metadata": {"name": ""}}, "metadata.name: '' must not be empty"),
    ({"spec": {"resources": {"cpu": "1", "memory": "1Gi", "gpu": {"count": -1}}}},
     "spec.resources.gpu.count"),
    ({"spec": {"resources": {"cpu": "1", "memory": "1Gi", "gpu": {"count": 10000}}}},
     "spec.resources.gpu.count"),
    ({"spec": {"resources": {"cpu": "1", "memory": "lots"}}}, "spec.resources.memory"),
    # YAML `true` was taken for 1: one GPU, one replica, a 1% target rendered.
    ({"spec": {"resources": {"cpu": "1", "memory": "1Gi", "gpu": {"count": True}}}},
     "spec.resources.gpu.count: must be a number, not true or false"),
    ({"spec": {"scaling": {"minReplicas": True, "maxReplicas": 2}}},
     "spec.scaling.minReplicas: must be a number, not true or false"),
    ({"spec": {"scaling": {"minReplicas": 1, "maxReplicas": 2, "target": True}}},
     "spec.scaling.target: must be a number, not true or false"),
    ({"spec": {"environments": {"moon": {}}}}, "unknown environment(s) moon"),
    ({"apiVersion": "v1"}, "apiVersion: must be promoter.dev/v1alpha1"),
])
def test_bad_input_is_refused_naming_the_field(run_cli: Run, tmp_path: Path,
                                               change: dict[str, object], expected: str) -> None:
    document = {**VALID, **{k: v for k, v in change.items() if k != "spec"}}
    if "spec" in change:
        document["spec"] = {**VALID["spec"], **change["spec"]}  # type: ignore[dict-item]
    intent = write_intent(tmp_path / "intent.yaml", document)
    out = tmp_path / "manifests"
    code, _, err = run_cli("render", "--intent", str(intent), "--env", "production",
                           "--out", str(out), "--config", CONFIG)
    assert code == 1, err
    assert expected in err
    assert not out.exists(), "nothing may be written on bad input"


def test_unknown_environment_and_non_yaml_intent_are_refused(run_cli: Run, tmp_path: Path) -> None:
    code, _, err = run_cli("render", "--intent", str(EXAMPLES / "llm-chat.yaml"), "--env", "moon",
                           "--dry-run", "--config", CONFIG)
    assert code == 1 and "unknown environment 'moon'" in err and "production" in err
    garbage = tmp_path / "intent.yaml"
    garbage.write_text("spec: [unclosed\n  : :")
    code, _, err = run_cli("render", "--intent", str(garbage), "--env", "production", "--dry-run")
    assert code == 1 and "is not valid YAML" in err
    garbage.write_bytes(b"\xff\xfe\x00binary")
    code, _, err = run_cli("render", "--intent", str(garbage), "--env", "production", "--dry-run")
    assert code == 1 and "cannot read intent file" in err


def test_usage_errors_exit_2(run_cli: Run) -> None:
    code, _, err = run_cli("render", "--intent", str(EXAMPLES / "llm-chat.yaml"),
                           "--env", "staging")
    assert code == 2 and "--dry-run" in err


@pytest.mark.parametrize(("source", "named"), [
    ("mlflow-artifacts:/1/run7/artifacts/model", True),     # the run's own files
    ("runs:/run7/model", True),
    ("runs:/other/model", False),                           # another run's files
    ("s3://elsewhere/model", False),                        # files no run vouches for
])
def test_render_from_the_registry_names_only_the_run_the_files_come_from(
        source: str, named: bool) -> None:
    """`render MODEL --version N` wrote the version's run_id as promoter.dev/mlflow-run-id
    as registered, though MLflow lets anyone name any run beside any source; a promotion
    writes it only when the files are that run's (core.lineage.run_of), as render does now."""
    from dataclasses import replace

    from promoter.model_source import request_from_registry
    from promoter.rendering import renderer
    from promoter.settings import load_settings
    from tests.core.test_pipeline import MODEL, MemoryRegistry

    registry = MemoryRegistry()
    registry.add(MODEL, "7")
    registry.versions[(MODEL, "7")] = replace(registry.versions[(MODEL, "7")], source=source)
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    request = request_from_registry(settings, MODEL, "7", "production", registry)
    assert request.lineage.run_id == ("run7" if named else None)
    assert request.lineage.source == source
    overlay = renderer(settings).render(request)["fraud-detector/overlays/production/"
                                                  "kustomization.yaml"]
    assert ("run7" in overlay) is named


def test_render_from_the_registry_refuses_what_vllm_would_refuse_at_start_up(
        run_cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """`render MODEL --version N` has the version's config.json in MLflow: a tree vLLM
    cannot start (3 GPUs over 32 attention heads) is refused as a promotion refuses it."""
    from promoter.ports.registry import HuggingFaceFiles
    from promoter.service import composition
    from tests.core.test_pipeline import INTENT_TAGS, MODEL, MemoryRegistry

    registry = MemoryRegistry()
    monkeypatch.setattr(composition, "registry", lambda settings: registry)
    for version, gpus in (("7", "3"), ("8", "4")):
        registry.add(MODEL, version, {**INTENT_TAGS, "deploy.runtime": "vllm",
                                      "deploy.resources.gpu.count": gpus})
        registry.hf_files[(MODEL, version)] = HuggingFaceFiles(
            names=frozenset({"config.json"}), config={"num_attention_heads": 32})
    code, out, err = run_cli("--config", CONFIG, "render", MODEL, "--version", "7",
                             "--env", "staging", "--dry-run")
    assert code == 1, out + err
    assert "spec.resources.gpu.count: 3 GPUs" in err and "32 attention heads" in err
    assert out == ""
    code, out, err = run_cli("--config", CONFIG, "render", MODEL, "--version", "8",
                             "--env", "staging", "--dry-run")
    assert code == 0, out + err
    assert "--tensor-parallel-size=4" in out
