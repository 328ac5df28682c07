"""The reference tree in manifests/ is what the examples render to today, and it validates."""

from __future__ import annotations

from pathlib import Path

from promoter import rendering
from promoter.core.render import ImagePin
from promoter.service import composition
from promoter.settings import load_settings
from promoter.validation import validate_tree
from tests.conftest import EXAMPLES, ROOT, requires_kubectl

MANIFESTS = ROOT / "manifests"
EXAMPLE_NAMES = ("fraud-detector", "llm-chat", "vision-segmenter", "code-assistant", "ad-ranker")
# The example pins manifests/README.md renders with (stand-ins for signed digests).
IMAGE_DIGEST = "sha256:" + "1" * 64
MODELCAR_DIGEST = "sha256:" + "2" * 64


def pins(name: str) -> dict[str, ImagePin]:
    return {"image": ImagePin(f"registry.example.com/models/{name}", IMAGE_DIGEST),
            "modelcar": ImagePin(f"registry.example.com/models/{name}-modelcar", MODELCAR_DIGEST)}


def test_reference_tree_matches_the_current_render() -> None:
    settings = load_settings(EXAMPLES / "promoter.yaml", environ={})
    expected: dict[str, str] = {}
    for example in EXAMPLE_NAMES:
        intent = rendering.load_intent_file(EXAMPLES / f"{example}.yaml")
        for env in ("staging", "production"):
            request = rendering.build_request(settings, intent, env, origin=example,
                                              **pins(example))
            expected.update(rendering.renderer(settings).render(request))
    on_disk = {str(p.relative_to(MANIFESTS)): p.read_text() for p in MANIFESTS.rglob("*.yaml")}
    assert on_disk == expected, "re-render manifests/ (see manifests/README.md)"


@requires_kubectl
def test_reference_tree_validates() -> None:
    reports = validate_tree(Path(MANIFESTS), composition.manifest_checker())
    assert len(reports) == 2 * len(EXAMPLE_NAMES)
    assert all(report.ok for report in reports), [r.problems for r in reports]


@requires_kubectl
def test_an_inference_service_kserve_cannot_name_a_host_for_fails_validation(
        tmp_path: Path) -> None:
    """A hand-edited overlay renaming the InferenceService (namePrefix here): the schemas
    allow any name, but KServe fails every reconcile of <name>-predictor-<namespace> past 63
    characters. `promoter validate` (the CI gate's manifests:validate) says so."""
    import shutil

    tree = tmp_path / "manifests"
    shutil.copytree(MANIFESTS / "vision-segmenter", tree / "vision-segmenter")
    kustomization = tree / "vision-segmenter/overlays/production/kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "namePrefix: a-much-longer-prefix-\n")
    reports = {r.overlay.name: r for r in validate_tree(tree, composition.manifest_checker())}
    assert reports["staging"].ok, reports["staging"].problems
    assert [p for p in reports["production"].problems if "host name label" in p] == [
        "InferenceService/a-much-longer-prefix-vision-segmenter: KServe's host name label "
        "'a-much-longer-prefix-vision-segmenter-predictor-models-production' would be 65 "
        "characters long; DNS allows 63, so the InferenceService never reconciles: shorten "
        "metadata.name (to at most 35 characters here) or the environment's namespace"]
