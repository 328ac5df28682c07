"""What an environment's overlay on the target branch pins, and the request that re-renders it.

Three writers render a deployment's overlay: a promotion (a new version, with the artifact it
just built and signed) and the `promoter rightsize` and `promoter forecast` proposals (the
version that runs, with other resources or another schedule). Every render replaces the whole
overlay, so each must carry forward what it does not change: a proposal builds no artifact, so
the signed image or modelcar digest and the lineage must come from the overlay that runs, and
a KEDA ScaledObject a merged forecast left must stay, or the overlay's scaling flips back to
promoter's HPA. All three build their request with `request` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from promoter.core import tree_facts
from promoter.core.config import Targets
from promoter.core.intent import build_request
from promoter.core.render import ImagePin, Lineage, RenderRequest
from promoter.core.spec import ModelRef
from promoter.errors import UserError
from promoter.ports.git import GitProvider


@dataclass(frozen=True)
class Pins:
    """What only a promotion produces: the lineage and the signed artifact, by digest."""

    lineage: Lineage = field(default_factory=Lineage)
    image: ImagePin | None = None      # the pyfunc serving image
    modelcar: ImagePin | None = None   # the signed modelcar


@dataclass(frozen=True)
class LiveOverlay:
    version: str | None                # promoter.dev/model-version: what the overlay runs
    pins: Pins
    scaled_object: str | None          # the accepted KEDA ScaledObject, if a forecast merged


def pins_of(kustomization: str) -> Pins:
    """The pins an overlay kustomization promoter rendered records in its commonAnnotations.

    An artifact annotation that is there but unreadable (someone rewrote the file in another
    YAML style) is refused: rendering on without it would silently drop the signed artifact.
    """
    return Pins(
        lineage=Lineage(run_id=tree_facts.annotation(kustomization, tree_facts.RUN_ID),
                        source=tree_facts.annotation(kustomization, tree_facts.MODEL_SOURCE)),
        image=_pin(kustomization, tree_facts.IMAGE),
        modelcar=_pin(kustomization, tree_facts.MODELCAR))


def _pin(kustomization: str, key: str) -> ImagePin | None:
    reference = tree_facts.annotation(kustomization, key)
    if reference is None:
        if f"{key}:" in kustomization:
            raise UserError(f"the overlay's {key} annotation cannot be read (the kustomization "
                            "is no longer in the form promoter writes)",
                            hint="promote the version again to re-render the overlay")
        return None
    repository, at, digest = reference.rpartition("@")
    if not at or not repository or not digest.startswith("sha256:"):
        raise UserError(f"the overlay's {key} annotation {reference!r} is not "
                        "<repository>@sha256:<digest>",
                        hint="promote the version again to re-render the overlay")
    return ImagePin(repository, digest)


def accepted_scaling(provider: GitProvider, root: str, name: str, env: str,
                     branch: str) -> str | None:
    """The overlay's ScaledObject on ``branch`` (a merged `promoter forecast` MR), or None."""
    return provider.read(tree_facts.scaled_object(root, name, env), branch)


def read(provider: GitProvider, root: str, name: str, env: str,
         branch: str) -> LiveOverlay | None:
    """The overlay of ``name`` in ``env`` on ``branch``, or None when there is none."""
    kustomization = provider.read(tree_facts.overlay_kustomization(root, name, env), branch)
    if kustomization is None:
        return None
    return LiveOverlay(version=tree_facts.annotation(kustomization, tree_facts.MODEL_VERSION),
                       pins=pins_of(kustomization),
                       scaled_object=accepted_scaling(provider, root, name, env, branch))


def request(targets: Targets, intent: Mapping[str, Any], env: str, *, origin: str,
            model: ModelRef, pins: Pins, scaling: str | None) -> RenderRequest:
    """The render request for ``intent`` in ``env`` with ``pins`` and, when ``scaling`` is
    given, that ScaledObject as the overlay's accepted scaling (bounded by the intent)."""
    built = build_request(targets, intent, env, origin=origin, lineage=pins.lineage,
                          image=pins.image, modelcar=pins.modelcar, model=model)
    return replace(built, accepted_scaling=scaling)
