"""The composition root: settings → the real adapters behind every port.

The only place that decides which provider, registry, image builder and signer a process
uses, and the only importer of ``promoter.adapters`` (checked by import-linter). Commands, the
demo and the service ask here instead of constructing adapters themselves. Adapters are
imported inside the functions so `promoter --help` never loads mlflow or gitlab.

Submodules: ``mlflow`` (the one MLflow adapter per process and its client settings),
``images`` (registry clients, image builds), ``signing`` (signers, verifiers, keyless).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from promoter.core import base_reuse
from promoter.core.config import PipelineConfig, frozen
from promoter.core.mr_events import ForgeEvent
from promoter.core.pipeline import Ports
from promoter.core.render import Renderer
from promoter.ports.clock import SystemClock
from promoter.ports.git import BranchReader, GitProvider
from promoter.ports.image import Signer, Verifier
from promoter.ports.metrics import MetricsSource
from promoter.ports.processes import BackgroundService
from promoter.ports.registry import Registry, WebhookAdmin
from promoter.ports.review import MergeRequestReview
from promoter.rendering import renderer
from promoter.service.composition import mlflow
from promoter.service.composition.images import (
    ModelImages,
    build_image,
    build_modelcar,
    registry_clients,
)
from promoter.service.composition.signing import cosign_signer, cosign_verifier, sign_keyless
from promoter.service.composition.state import audit_trail, state_db, state_for_reading
from promoter.service.composition.state import describe as describe_state
from promoter.service.gc_outcomes import overlays_on_target
from promoter.service.ledger import StateLedger
from promoter.service.outcomes import MergeRequestOutcomes
from promoter.settings import Settings
from promoter.state.gc_pending import GcPending
from promoter.state.left_mrs import LeftMrs
from promoter.state.pushed_heads import PushedHeads

if TYPE_CHECKING:
    from promoter.ports.clusters import ApplicationSource
    from promoter.ports.forge import Forge
    from promoter.service.cluster_feedback import ClusterFeedback
    from promoter.service.gitlab_hook import GitLabHookHandler
    from promoter.service.metrics import Metrics
    from promoter.service.mr_sweep import MergeRequestSweep
    from promoter.validation import ManifestChecker

__all__ = [
    "argocd_applications",
    "audit_trail",
    "background_service",
    "branch_reader",
    "build_image",
    "build_modelcar",
    "cluster_feedback",
    "cosign_signer",
    "cosign_verifier",
    "describe",
    "describe_state",
    "free_port",
    "gitlab_hook",
    "local_review",
    "manifest_checker",
    "mr_sweep",
    "outcomes",
    "pipeline_config",
    "ports",
    "provider",
    "registry",
    "registry_clients",
    "sign_keyless",
    "signer",
    "state_db",
    "state_for_reading",
    "tool_versions",
    "verifier",
    "webhooks",
]


def registry(settings: Settings) -> Registry:
    """The MLflow registry: one adapter (one MlflowClient) per process and tracking URI."""
    return mlflow.adapter(settings)


def webhooks(settings: Settings) -> WebhookAdmin:
    """MLflow's webhooks, through the same adapter as ``registry``."""
    return mlflow.adapter(settings)


def outcomes(settings: Settings, registry: Registry | None) -> MergeRequestOutcomes:
    from promoter.service.cluster_status_store import StatusStore

    state = state_db(settings)
    statuses = StatusStore(state)

    def forge() -> Forge | None:
        """The provider's forge, for the note on an MR merged with a head promoter did not
        push: built only then (rare), both providers expose theirs."""
        return cast("Forge | None", getattr(provider(settings), "forge", None))

    def target_overlays() -> frozenset[tuple[str, str]]:
        """(name, env) of the overlays on the target branch now: a GC merge decommissions
        only what that branch no longer has (read only when a GC merge is recorded)."""
        return overlays_on_target(provider(settings), settings.git.manifests_dir.strip("/"),
                                  settings.git.target_branch)

    def points_at(model: str, env: str) -> str | None:
        """The version ``env``'s trigger points ``model`` at now: a GC merge records no
        decommission of an overlay its environment wants again (read only for the overlays a
        GC merge removed)."""
        target = settings.targets().environments.get(env)
        if registry is None or target is None:
            return None
        return base_reuse.pointed_at(registry, model, target)

    def after_merge(name: str, env: str) -> None:
        """Argo CD's stored status judged again once a verified merge is recorded. Most
        merges have none stored (Argo CD not used, or not reported yet): one small query,
        and no provider or feedback is built for them."""
        if statuses.rows(name, env):
            cluster_feedback(settings, registry).after_merge(name, env, actor="promoter")

    return MergeRequestOutcomes(registry, StateLedger(state), audit_trail(settings),
                                PushedHeads(state), forge=forge,
                                target_overlays=target_overlays, points_at=points_at,
                                after_merge=after_merge)


def provider(settings: Settings,
             on_event: Callable[[ForgeEvent], None] | None = None) -> GitProvider:
    if settings.git.provider == "gitlab":
        from promoter.adapters import gitlab_provider

        return gitlab_provider.from_settings(settings, state=state_db(settings))
    from promoter.adapters import localgit

    return localgit.from_settings(settings, on_event=on_event, state=state_db(settings))


@contextmanager
def branch_reader(settings: Settings) -> Iterator[BranchReader]:
    """The GitOps repository's branches for reading only (`policy check`, `forecast`,
    `rightsize`): nothing is written to the state directory, its database or any repository,
    and the provider's shared clone is not opened (see adapters.localgit_snapshot). GitLab:
    its API (ConfigError without a token); local: a throwaway fetch of the remote."""
    if settings.git.provider == "gitlab":
        from promoter.adapters import gitlab_provider

        yield gitlab_provider.reader_from_settings(settings)
        return
    from promoter.adapters import localgit_snapshot

    with localgit_snapshot.reader_from_settings(settings) as reader:
        yield reader


def metrics_source(settings: Settings) -> MetricsSource:
    """Prometheus' HTTP API at prometheus.url, for `promoter forecast`, `rightsize` and `cost`."""
    from promoter.adapters.prometheus import PrometheusSource
    from promoter.errors import ConfigError

    if not settings.prometheus.url:
        raise ConfigError("prometheus.url is not set",
                          hint="set prometheus.url in promoter.yaml (or PROMOTER_PROMETHEUS_URL)")
    return PrometheusSource(settings.prometheus.url,
                            timeout_seconds=settings.prometheus.timeout_seconds)


def local_review(settings: Settings,
                 on_event: Callable[[ForgeEvent], None] | None = None) -> MergeRequestReview:
    """The local git provider's merge requests, to review (`promoter mr`, the demo)."""
    from promoter.adapters import localgit

    return localgit.from_settings(settings, on_event=on_event, state=state_db(settings))


def signer(settings: Settings) -> Signer | None:
    """A key-based cosign signer when image.signing_key is set (password COSIGN_PASSWORD;
    the settings refuse a key together with image.oci_layout, which holds no signature)."""
    if settings.image.signing_key is None:
        return None
    password = settings.secret("COSIGN_PASSWORD")
    return cosign_signer(settings, password=password.reveal() if password else "")


def verifier(settings: Settings, signing: Signer | None) -> Verifier | None:
    """What checks a signature before an MR is opened: the configured verification key
    whenever one is set (the key `gitops init` writes into the admission policies, so a
    signing key that is not its pair is caught here, not by every pod's admission), else the
    signing key's own public half."""
    if settings.image.verification_key is None:
        return signing
    return cosign_verifier(settings, public_key=settings.image.verification_key)


def ports(settings: Settings, registry: Registry) -> Ports:
    """Every adapter the pipeline needs. Build once per process: loading the signing key runs
    scrypt (deliberately slow) and the renderer compiles its templates."""
    hooks = outcomes(settings, registry)
    signing = signer(settings)
    return Ports(registry=registry, provider=provider(settings, on_event=hooks),
                 ledger=hooks.ledger, renderer=renderer(settings),
                 images=ModelImages(settings), signer=signing,
                 verifier=verifier(settings, signing), clock=SystemClock(), history=hooks.audit,
                 audit=hooks.audit)


def pipeline_config(settings: Settings, renderer: Renderer) -> PipelineConfig:
    """The pipeline's configuration with the renderer's runtime descriptors in its targets, so
    an intent its runtime cannot render is refused (status invalid) before anything is built."""
    config = settings.pipeline_config()
    targets = dataclasses.replace(config.targets, runtimes=frozen(renderer.runtimes))
    return dataclasses.replace(config, targets=targets)


def argocd_applications(settings: Settings) -> ApplicationSource:
    """Argo CD Application objects through the kubernetes client (kubeconfig or in-cluster)."""
    from promoter.adapters.argocd import ArgoCDApplications

    return ArgoCDApplications.from_settings(settings)


def cluster_feedback(settings: Settings, registry: Registry | None) -> ClusterFeedback:
    """Argo CD status → MLflow tags, MR notes (the provider's forge) and the audit trail."""
    from promoter.service.cluster_feedback import ClusterFeedback
    from promoter.service.cluster_status_store import StatusStore

    git = provider(settings)
    state = state_db(settings)
    return ClusterFeedback(StatusStore(state), StateLedger(state), audit_trail(settings), registry,
                           getattr(git, "forge", None),  # both providers expose theirs
                           git)


def gitlab_hook(settings: Settings, on_event: Callable[[ForgeEvent], None]) -> GitLabHookHandler:
    """``POST /webhooks/gitlab``: acts only on MR heads recorded as pushed by promoter."""
    from promoter.service.gitlab_hook import GitLabHookHandler

    users: list[str | None] = []

    def own_username() -> str | None:
        """The token's user, read from GitLab once (the first close titled as promoter's)."""
        if not users:
            users.append(provider(settings).own_username())
        return users[0]

    counters: list[Callable[[int], tuple[int, int] | None]] = []

    def counted_approvals(iid: int) -> tuple[int, int] | None:
        """An MR's approvals where only promoter counts them (GitLab CE/Free); the provider
        is built on the first ``approved``. The hook is served with the GitLab provider only
        (runner); another counts its approvals itself: None."""
        if not counters:
            from promoter.adapters.gitlab_provider import GitLabProvider

            git = provider(settings)
            counters.append(git.forge.counted_approvals if isinstance(git, GitLabProvider)
                            else lambda _iid: None)
        return counters[0](iid)

    return GitLabHookHandler.from_settings(
        settings, on_event, PushedHeads(state_db(settings)).pushed, state_db(settings),
        own_username=own_username, counted_approvals=counted_approvals)


def mr_sweep(settings: Settings, outcomes: MergeRequestOutcomes,
             metrics: Metrics | None = None) -> MergeRequestSweep:
    """The reconcile loop's MR sweep: merges and closes whose webhook was lost, fed to
    ``outcomes`` (the webhook's handler)."""
    from promoter.service.mr_sweep import MergeRequestSweep

    git = provider(settings)
    state = state_db(settings)
    return MergeRequestSweep(StateLedger(state), git, PushedHeads(state), outcomes,
                             project=lambda: pushed_project(settings, git),
                             target_branch=settings.git.target_branch, metrics=metrics,
                             gc_pending=GcPending(state), on_gc_mr_gone=outcomes.gc.gone,
                             left_mrs=LeftMrs(state))


def pushed_project(settings: Settings, git: GitProvider) -> tuple[int, str]:
    """(id, path) of the project the provider records its pushed heads under: GitLab's numeric
    project id (what its webhooks carry; read from the API, so only when first needed), the
    local provider's fixed one."""
    if settings.git.provider == "gitlab":
        from promoter.adapters.gitlab_provider import GitLabProvider

        assert isinstance(git, GitLabProvider)
        return git.forge.project_id, settings.git.gitlab.project or ""
    from promoter.adapters.localgit import LOCAL_PROJECT_ID

    # Not the remote: a URL may carry credentials, and nothing downstream reads the path.
    return LOCAL_PROJECT_ID, "local"


def manifest_checker() -> ManifestChecker:
    """Real Kustomize and the Kubernetes/CRD schemas, for `promoter validate`."""
    from promoter.adapters import kustomize, schemas
    from promoter.validation import ManifestChecker

    return ManifestChecker(build=kustomize.build, problems=schemas.problems)


def changed_files(base: str) -> list[Path]:
    """The files the git checkout around the working directory changed since ``base``."""
    from promoter.adapters.git_changes import changed_since

    return changed_since(base)


def background_service(name: str, directory: Path) -> BackgroundService:
    """A detached service recorded under ``directory`` (the demo's MLflow, registry, serve)."""
    from promoter.adapters.processes import Service

    return Service(name, directory)


def free_port(preferred: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now: ``preferred`` when it is free."""
    from promoter.adapters.processes import free_port as find

    return find(preferred)


def tool_versions() -> dict[str, str]:
    """The versions of the external tools promoter runs ("not found" when missing)."""
    from promoter.adapters.tools import versions

    return versions()


def describe(settings: Settings) -> dict[str, Any]:
    """What this configuration wires up, for `promoter demo` and logs (no secrets)."""
    from promoter.redaction import without_url_userinfo

    uri = settings.mlflow.tracking_uri
    return {"provider": settings.git.provider, "mlflow": without_url_userinfo(uri) if uri else None,
            "image_repository": settings.image.repository,
            "oci_layout": str(settings.image.oci_layout) if settings.image.oci_layout else None,
            "signing": bool(settings.image.signing_key), "state_dir": str(settings.state_dir),
            "state": describe_state(settings)}
