"""The CI gate's image check: what each built overlay would pull, and what must be verified.

Rule (README, "The CI gate"): every image reference in every built overlay must be pinned by
digest, whoever made it (the signed artifact, a server image, a sidecar someone added); a tag
can be moved after review. Model files KServe would download from outside a registry (an
``s3://`` or ``https://`` storage URI) fail it: nothing signed them. Every pinned reference
is then listed for signature verification, except the server images promoter.yaml pins in
``runtime_images``: those are the vendors' (vLLM, Triton), signed by them, not by your key,
and outside the admission globs (``image.repository``/``image.modelcar_repository``) the
generated policies enforce; they are exempt only at exactly the configured digest, so
swapping one in a merge request is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from promoter.core.image_refs import image_uses, unpinned_problem, unsigned_storage_problem
from promoter.errors import UserError
from promoter.validation import find_overlays
from promoter.yaml_read import load_documents


@dataclass
class ImageGate:
    verify: list[str] = field(default_factory=list)    # pinned references to verify, sorted
    exempt: list[str] = field(default_factory=list)    # pinned runtime_images, not verified
    problems: list[str] = field(default_factory=list)  # why the gate fails (empty: it passes)


def gate_images(tree: Path, build: Callable[[Path], str],
                configured_server_images: Iterable[str] = ()) -> ImageGate:
    """Judge every overlay under ``tree``; ``build`` is `kustomize build` (the composition
    root's manifest checker has it). An overlay that does not build fails the gate: what it
    would run is unknown."""
    overlays = find_overlays(tree)
    if not overlays:
        raise UserError(f"no overlays found under {tree}",
                        hint="expected <model>/overlays/<env>/kustomization.yaml")
    trusted = set(configured_server_images)
    verify: set[str] = set()
    exempt: set[str] = set()
    gate = ImageGate()
    for overlay in overlays:
        try:
            documents = [d for d in load_documents(build(overlay), what="kustomize output")
                         if isinstance(d, dict)]
        except UserError as exc:   # it did not build, or its output cannot be read
            gate.problems.append(f"{overlay}: {exc.message}")
            continue
        for use in image_uses(documents):
            if not use.from_registry:
                gate.problems.append(unsigned_storage_problem(str(overlay), use))
            elif not use.pinned:
                gate.problems.append(unpinned_problem(str(overlay), use))
            elif use.reference in trusted:
                exempt.add(use.reference)
            else:
                verify.add(use.reference)
    gate.verify, gate.exempt = sorted(verify), sorted(exempt)
    return gate
