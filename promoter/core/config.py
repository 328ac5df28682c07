"""The narrow, frozen configuration the core's use cases need, as plain values.

``promoter.settings`` (pydantic, files, environment) builds these once; the core never sees
``Settings`` itself, so it cannot read a file, an environment variable or a secret by accident,
and tests construct exactly the configuration they mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from promoter.core.gates import Gate
from promoter.core.runtimes import RuntimeDescriptor
from promoter.errors import ConfigError


def frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only view, so a shared configuration value cannot be changed by one caller."""
    return MappingProxyType(dict(mapping or {}))


def unknown_environment(name: str, known: Mapping[str, Any]) -> ConfigError:
    """The one wording of an environment that promoter.yaml does not declare."""
    return ConfigError(f"unknown environment {name!r}",
                       hint=f"environments in this configuration: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class EnvironmentTarget:
    """One environment promoter deploys to, and how models get there."""

    name: str
    namespace: str
    alias: str | None = None              # MLflow alias that promotes into it
    stage: str | None = None              # legacy stage that promotes into it
    spec_defaults: Mapping[str, Any] = field(default_factory=frozen)  # intent-shaped defaults
    approvals: int = 1
    auto_merge: bool = False
    allowed_gpu_types: tuple[str, ...] | None = None
    allowed_regions: tuple[str, ...] | None = None
    cluster_selector: Mapping[str, str] = field(default_factory=frozen)
    mig_profiles: tuple[str, ...] | None = None   # MIG profiles its GPU nodes offer; None: any
    priority_class_name: str | None = None       # PriorityClass of its model pods
    zone_spread: str | None = "ScheduleAnyway"    # topology spread over zones; None: off


COST_LABEL_ROLES = ("team", "cost_center", "environment", "model", "runtime")
# Label keys promoter sets itself (selector, ownership: core.manifest_context), never a cost
# label's key.
OWN_LABEL_PREFIXES = ("app.kubernetes.io/", "promoter.dev/")
DEFAULT_COST_LABELS = {"team": "team", "cost_center": "cost-center", "environment": "env",
                       "model": "app", "runtime": "runtime"}


@dataclass(frozen=True)
class Targets:
    """What resolving an intent needs: the defaults and the environments."""

    defaults: Mapping[str, Any]
    environments: Mapping[str, EnvironmentTarget]
    image_repository: str | None = None   # "{name}" stands for the deployment name
    modelcar_repository: str | None = None  # where modelcars go; None: image_repository
    # Label keys cost tools (OpenCost, Kubecost) aggregate by, per role; see COST_LABEL_ROLES.
    cost_labels: Mapping[str, str] = field(default_factory=lambda: frozen(DEFAULT_COST_LABELS))
    # The pyfunc image gets Python from its base: False means the image cannot start, which
    # only the demo accepts (and says so).
    image_base_configured: bool = True
    # KServe runs a modelcar through `sh`: False means a kserve modelcar could not start.
    modelcar_base_configured: bool = True
    demo: bool = False
    # The renderer's runtime descriptors (Renderer.runtimes): when given, resolving an intent
    # already refuses what its runtime cannot render, before any image is built.
    runtimes: Mapping[str, RuntimeDescriptor] = field(default_factory=frozen)

    def environment(self, name: str) -> EnvironmentTarget:
        try:
            return self.environments[name]
        except KeyError:
            raise unknown_environment(name, self.environments) from None


@dataclass(frozen=True)
class PolicyConfig:
    required_tags: Mapping[str, str] = field(default_factory=frozen)
    team_gpu_quota: Mapping[str, int] = field(default_factory=frozen)
    default_team_gpu_quota: int | None = None   # for teams without an entry; None: unlimited
    gates: tuple[Gate, ...] = ()                 # promotion gates from promoter.yaml (core.gates)
    # (team, env) -> (GitLab user ids, group ids) who must approve that team's MRs there
    approvers: Mapping[tuple[str, str], tuple[tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=dict)
    # team -> env -> CODEOWNERS owners (@group, @user) of that team's model directories
    codeowners: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the promotion pipeline reads from configuration."""

    targets: Targets
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    manifests_dir: str = "manifests"
    target_branch: str = "main"
    run_link_base: str | None = None      # http(s) base of the MLflow UI, for run links in MRs

    @property
    def manifests_root(self) -> str:
        return self.manifests_dir.strip("/")
