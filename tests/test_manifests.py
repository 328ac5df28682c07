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
