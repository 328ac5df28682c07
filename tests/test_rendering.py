"""Rendering the examples: golden trees, determinism, real Kustomize and schemas."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from promoter import rendering
from promoter.core.render import ImagePin, Lineage
from promoter.service import composition
from promoter.settings import load_settings
from promoter.validation import validate_tree
from tests.conftest import EXAMPLES, requires_kubectl

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE_NAMES = ("fraud-detector", "llm-chat", "vision-segmenter", "code-assistant", "ad-ranker")
CASES = [(example, env) for example in EXAMPLE_NAMES for env in ("staging", "production")]
SETTINGS = load_settings(EXAMPLES / "promoter.yaml", environ={})
DIGEST = "sha256:" + "ab" * 32
MODELCAR = ImagePin("registry.example.com/models/x-modelcar", "sha256:" + "cd" * 32)


def render(example: str, env: str, **kwargs: object) -> dict[str, str]:
    intent = rendering.load_intent_file(EXAMPLES / f"{example}.yaml")
    request = rendering.build_request(SETTINGS, intent, env, origin=example, **kwargs)  # type: ignore[arg-type]
    return rendering.renderer(SETTINGS).render(request)


@pytest.mark.parametrize(("example", "env"), CASES)
def test_matches_golden_tree(example: str, env: str) -> None:
    files = render(example, env, lineage=Lineage(run_id="0123abcd", source="models:/m-0123abcd"),
                   image=ImagePin("registry.example.com/models/x", DIGEST), modelcar=MODELCAR)
    golden = GOLDEN / f"{example}.{env}"
    if os.environ.get("PROMOTER_UPDATE_GOLDEN"):
        rendering.write_tree(golden, files)
    on_disk = {str(p.relative_to(golden)): p.read_text() for p in golden.rglob("*") if p.is_file()}
    assert files == on_disk, "render changed: review, then regenerate with PROMOTER_UPDATE_GOLDEN=1"


@pytest.mark.parametrize(("example", "env"), CASES)
def test_rendering_is_deterministic(example: str, env: str) -> None:
    assert render(example, env) == render(example, env)


def test_image_is_pinned_by_digest_when_known() -> None:
    files = render("fraud-detector", "production",
                   image=ImagePin("registry.example.com/models/fraud-detector", DIGEST))
    overlay = files["fraud-detector/overlays/production/kustomization.yaml"]
    assert f"digest: \"{DIGEST}\"" in overlay or f"digest: {DIGEST}" in overlay
    assert "newTag" not in overlay


def test_a_sources_url_credentials_stay_out_of_the_committed_tree() -> None:
    """The overlay's model-source annotation is committed to the GitOps repository: a source
    with userinfo or a presigned URL's signature was written there as it was."""
    source = "https://alice:hunter2@models.example.com/m.tar.gz?X-Amz-Signature=deadbeef"
    files = render("fraud-detector", "production", lineage=Lineage(run_id="r1", source=source))
    text = "".join(files.values())
    assert "hunter2" not in text and "deadbeef" not in text
    overlay = files["fraud-detector/overlays/production/kustomization.yaml"]
    assert "https://***@models.example.com/m.tar.gz?X-Amz-Signature=***" in overlay


def test_staging_promotion_leaves_the_base_untouched() -> None:
    """Version-bound values live in overlays, so any version renders the same base."""
    v7 = render("llm-chat", "staging")
    intent = rendering.load_intent_file(EXAMPLES / "llm-chat.yaml")
    intent["spec"]["model"]["version"] = "8"
    request = rendering.build_request(SETTINGS, intent, "staging", origin="v8")
    v8 = rendering.renderer(SETTINGS).render(request)
    bases = [path for path in v7 if "/base/" in path]
    assert bases and all(v7[path] == v8[path] for path in bases)
    assert v7["llm-chat/overlays/staging/kustomization.yaml"] != \
        v8["llm-chat/overlays/staging/kustomization.yaml"]


@requires_kubectl
def test_every_example_overlay_builds_and_validates(tmp_path: Path) -> None:
    for example, env in CASES:
        rendering.write_tree(tmp_path, render(example, env, image=ImagePin("r.example/m", DIGEST),
                                              modelcar=MODELCAR))
    reports = validate_tree(tmp_path, composition.manifest_checker())
    assert len(reports) == len(CASES)
    assert [r.problems for r in reports if not r.ok] == []
    assert all(r.resources >= 2 for r in reports)



@requires_kubectl
@pytest.mark.parametrize("example", ["llm-chat", "code-assistant", "fraud-detector"])
def test_padded_cpu_and_memory_render_as_valid_quantities(example: str, tmp_path: Path) -> None:
    """``cpu: "8 "`` passed validation but was rendered as '8 ', which the InferenceService
    schema (and the API server's quantity parser) refuse: Argo CD could not sync it."""
    intent = rendering.load_intent_file(EXAMPLES / f"{example}.yaml")
    intent["spec"]["resources"].update(cpu="8 ", memory="160Gi\t")
    request = rendering.build_request(SETTINGS, intent, "production", origin=example,
                                      image=ImagePin("r.example/m", DIGEST), modelcar=MODELCAR)
    rendering.write_tree(tmp_path, rendering.renderer(SETTINGS).render(request))
    reports = validate_tree(tmp_path, composition.manifest_checker())
    assert [r.problems for r in reports if not r.ok] == []
    built = subprocess.run(["kubectl", "kustomize", str(tmp_path / request.deployment.name /
                                                        "overlays/production")],
                           capture_output=True, text=True, check=True).stdout
    assert "cpu: \"8\"" in built and "memory: 160Gi\n" in built, built

@requires_kubectl
def test_built_resources_carry_gpu_region_and_lineage(tmp_path: Path) -> None:
    rendering.write_tree(tmp_path, render(
        "vision-segmenter", "production", lineage=Lineage(run_id="run42", source="models:/m-9"),
        modelcar=MODELCAR))
    overlay = tmp_path / "vision-segmenter/overlays/production"
    built = subprocess.run(["kubectl", "kustomize", str(overlay)],
                           capture_output=True, text=True, check=True).stdout
    for expected in ("nvidia.com/gpu: \"4\"", "nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB",
                     "topology.kubernetes.io/region", "- eu-west-1", "- us-east-1",
                     "promoter.dev/mlflow-run-id: run42",
                     f"storageUri: oci://{MODELCAR.repository}@{MODELCAR.digest}",
                     "namespace: models-production", "promoter.dev/model-version: \"12\"",
                     "effect: NoSchedule", "priorityClassName: models-production",
                     "topologyKey: topology.kubernetes.io/zone"):
        assert expected in built, expected


def test_writing_over_another_models_directory_is_refused(tmp_path: Path) -> None:
    rendering.write_tree(tmp_path, render("fraud-detector", "staging"))
    intent = rendering.load_intent_file(EXAMPLES / "fraud-detector.yaml")
    intent["spec"]["model"]["name"] = "fraud_detector"  # another registered model, same name
    request = rendering.build_request(SETTINGS, intent, "staging", origin="other")
    before = sorted(p.read_text() for p in tmp_path.rglob("*.yaml"))
    with pytest.raises(Exception, match="already holds model 'Fraud Detector'"):
        rendering.write_tree(tmp_path, rendering.renderer(SETTINGS).render(request))
    assert sorted(p.read_text() for p in tmp_path.rglob("*.yaml")) == before


@pytest.mark.parametrize("base", [
    b"resources: [deployment.yaml]\n",                                     # hand-written
    b"- promoter.dev/registered-model: Fraud Detector\n",                  # a list
    b"commonAnnotations:\n- promoter.dev/registered-model\n",             # annotations a list
    b"._\n",
    b"commonAnnotations: {a: \xff\xfe}\n",                                # not UTF-8
    None,                                                                # base/ without one
])
def test_a_directory_promoter_did_not_write_is_left_alone(tmp_path: Path,
                                                           base: bytes | None) -> None:
    """`render --out` took a base with no registered-model annotation, or one it could not
    read, for its own, and deleted the other files there as stale (or crashed with
    "unexpected error" on a list, a plain `._`, non-UTF-8): the pipeline refuses the same
    directory as "a directory promoter did not write". Now a named error, nothing deleted."""
    directory = tmp_path / "fraud-detector" / "base"
    directory.mkdir(parents=True)
    (directory / "deployment.yaml").write_text("kind: Deployment  # mine\n")
    (directory / "notes.txt").write_text("hand-written\n")
    if base is not None:
        (directory / "kustomization.yaml").write_bytes(base)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(rendering.UserError, match="a directory promoter did not write"):
        rendering.write_tree(tmp_path, render("fraud-detector", "staging"))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_promoters_own_directory_is_rendered_again(tmp_path: Path) -> None:
    """The owner check still lets a model replace its own tree, stale files removed."""
    rendering.write_tree(tmp_path, render("fraud-detector", "staging"))
    stale = tmp_path / "fraud-detector" / "overlays" / "staging" / "hpa-patch.yaml"
    stale.write_text("stale\n")
    rendering.write_tree(tmp_path, render("fraud-detector", "production"))
    rendering.write_tree(tmp_path, render("fraud-detector", "staging"))
    assert not stale.exists()
    assert (tmp_path / "fraud-detector" / "overlays" / "production" / "kustomization.yaml").exists()


@pytest.mark.parametrize(("example", "platform"), [
    ("vision-segmenter", None), ("llm-chat", "kserve"), ("llm-chat", "kubernetes"),
    ("ad-ranker", None)])
def test_a_name_too_long_for_kserves_host_name_is_an_invalid_intent(
        example: str, platform: str | None) -> None:
    """KServe names the predictor's host <name>-predictor-<namespace>, one DNS label of at
    most 63 characters, and fails every reconcile of a longer one: a 45-character name in
    models-production (17) rendered an InferenceService that never came up."""
    from promoter.core.naming import kserve_host_problem
    from promoter.errors import UserError

    def attempt(name: str) -> None:
        intent = rendering.load_intent_file(EXAMPLES / f"{example}.yaml")
        intent.setdefault("metadata", {})["name"] = name
        if platform is not None:
            intent["spec"].setdefault("serving", {})["platform"] = platform
        request = rendering.build_request(SETTINGS, intent, "production", origin=example)
        rendering.renderer(SETTINGS).render(request)

    assert kserve_host_problem("a" * 35, "models-production") is None
    longest = "m" * 35                      # 35 + len("-predictor-models-production") == 63
    attempt(longest)
    if platform == "kubernetes" or example == "ad-ranker":   # plain Deployments: no such host
        attempt(longest + "x" * 10)
        return
    with pytest.raises(UserError, match="at most 35 characters here") as raised:
        attempt(longest + "x")
    assert "64 characters long" in raised.value.message


@requires_kubectl
def test_a_description_with_direction_controls_is_committed_escaped(tmp_path: Path) -> None:
    """The description reached the base raw: a U+202E in it reordered how the committed file
    and the MR diff display. It is written as \\u202e, and real Kustomize reads back the very
    string the intent held."""
    from ruamel.yaml import YAML

    from promoter.core.naming import DISPLAY_CONTROLS

    description = "fraud scores \u202etxet neddih\u202c \u2066isolated\u2069 \u200fmark"
    intent = rendering.load_intent_file(EXAMPLES / "fraud-detector.yaml")
    intent["spec"]["description"] = description
    request = rendering.build_request(SETTINGS, intent, "production", origin="bidi",
                                      image=ImagePin("r.example/m", DIGEST), modelcar=MODELCAR)
    files = rendering.renderer(SETTINGS).render(request)
    text = "".join(files.values())
    assert "\\u202e" in text and not DISPLAY_CONTROLS.search(text.replace("\n", ""))
    rendering.write_tree(tmp_path, files)
    built = subprocess.run(["kubectl", "kustomize", str(tmp_path / request.deployment.name /
                                                        "overlays/production")],
                           capture_output=True, text=True, check=True).stdout
    found = [doc["metadata"]["annotations"]["promoter.dev/description"]
             for doc in YAML(typ="safe", pure=True).load_all(built)
             if "promoter.dev/description" in (doc["metadata"].get("annotations") or {})]
    assert found and all(value == description for value in found)
