"""The composition root: settings → the real adapters behind every port.

The only place that decides which provider, registry, image builder and signer a process
uses; commands and the service ask here instead of constructing adapters themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promoter.core.mr_events import ForgeEvent
from promoter.core.pipeline import Pipeline, Ports
from promoter.ports.clock import SystemClock
from promoter.ports.git import GitProvider
from promoter.ports.image import Signer, Verifier
from promoter.ports.pipeline import Progress
from promoter.ports.registry import Registry
from promoter.rendering import renderer
from promoter.service.audit import AuditTrail
from promoter.service.ledger import SqliteLedger
from promoter.service.outcomes import MergeRequestOutcomes
from promoter.settings import Settings

if TYPE_CHECKING:
    from promoter.service.cluster_feedback import ClusterFeedback


def registry(settings: Settings) -> Registry:
    from promoter.adapters.mlflow_registry import MlflowRegistry

    return MlflowRegistry(settings.mlflow.tracking_uri)


def outcomes(settings: Settings, registry: Registry | None) -> MergeRequestOutcomes:
    return MergeRequestOutcomes(registry, SqliteLedger(settings.state_dir),
                                AuditTrail(settings.state_dir))


def provider(settings: Settings,
             on_event: Callable[[ForgeEvent], None] | None = None) -> GitProvider:
    if settings.git.provider == "gitlab":
        from promoter.adapters import gitlab

        return gitlab.from_settings(settings)
    from promoter.adapters import localgit

    return localgit.from_settings(settings, on_event=on_event)


def signer(settings: Settings) -> Signer | None:
    """A key-based cosign signer when image.signing_key is set (password COSIGN_PASSWORD)."""
    if settings.image.signing_key is None or settings.image.oci_layout is not None:
        return None
    from promoter.signing.wiring import cosign_signer

    password = settings.secret("COSIGN_PASSWORD")
    return cosign_signer(settings, password=password.reveal() if password else "")


def verifier(settings: Settings, signing: Signer | None) -> Verifier | None:
    """What checks a signature before an MR is opened: the configured verification key (an
    image signed elsewhere, e.g. by CI), else the signing key's own public half."""
    if settings.image.oci_layout is not None:
        return None
    if signing is not None or settings.image.verification_key is None:
        return signing  # a signer verifies with image.verification_key when one is set
    from promoter.signing.wiring import cosign_verifier

    return cosign_verifier(settings, settings.image.verification_key)


def ports(settings: Settings, registry: Registry) -> Ports:
    """Every adapter the pipeline needs. Build once per process: loading the signing key runs
    scrypt (deliberately slow) and the renderer compiles its templates."""
    from promoter.adapters.model_images import RegistryModelImages

    hooks = outcomes(settings, registry)
    signing = signer(settings)
    return Ports(registry=registry, provider=provider(settings, on_event=hooks),
                 ledger=hooks.ledger, renderer=renderer(settings),
                 images=RegistryModelImages(settings), signer=signing,
                 verifier=verifier(settings, signing), clock=SystemClock(), history=hooks.audit)


def pipeline(settings: Settings, registry: Registry, *,
             progress: Progress | None = None) -> Pipeline:
    return Pipeline(settings.pipeline_config(), ports(settings, registry), progress)


def cluster_feedback(settings: Settings, registry: Registry | None) -> ClusterFeedback:
    """Argo CD status → MLflow tags, MR notes (the provider's forge) and the audit trail."""
    from promoter.service.cluster_feedback import ClusterFeedback, StatusStore

    git = provider(settings)
    return ClusterFeedback(StatusStore(settings.state_dir), SqliteLedger(settings.state_dir),
                           AuditTrail(settings.state_dir), registry,
                           getattr(git, "forge", None),  # both providers expose theirs
                           git, settings.git.target_branch)


def describe(settings: Settings) -> dict[str, Any]:
    """What this configuration wires up, for `promoter demo` and logs (no secrets)."""
    return {"provider": settings.git.provider, "mlflow": settings.mlflow.tracking_uri,
            "image_repository": settings.image.repository,
            "oci_layout": str(settings.image.oci_layout) if settings.image.oci_layout else None,
            "signing": bool(settings.image.signing_key), "state_dir": str(settings.state_dir)}
