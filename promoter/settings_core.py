"""Settings → the core's frozen configuration values (core.config): what the pipeline, the
renderer and the gates read, translated once, with no secrets and no paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from promoter.core.config import EnvironmentTarget, PipelineConfig, PolicyConfig, Targets, frozen
from promoter.core.gates import Gate
from promoter.core.spec import resolve
from promoter.policy_settings import compile_gates

if TYPE_CHECKING:
    from promoter.settings import Environment, Settings


def targets(settings: Settings) -> Targets:
    """The environments and defaults as the core's frozen value."""
    return Targets(defaults=frozen(settings.defaults),
                   environments=frozen({name: _target(name, env)
                                        for name, env in settings.environments.items()}),
                   image_repository=settings.image.repository,
                   modelcar_repository=settings.image.modelcar_repository,
                   cost_labels=frozen(settings.cost_labels),
                   image_base_configured=settings.image.base is not None,
                   modelcar_base_configured=settings.image.modelcar_base is not None,
                   demo=settings.image.demo)


def gates(settings: Settings) -> tuple[Gate, ...]:
    """policy.gates and policy.teams compiled for the core (ConfigError when one is bad)."""
    return compile_gates(settings.policy, settings.environments, _sample_intent(settings.defaults))


def pipeline_config(settings: Settings) -> PipelineConfig:
    """What the promotion pipeline reads, and nothing else (no secrets, no paths)."""
    base = _without_userinfo(settings.mlflow.ui_url or settings.mlflow.tracking_uri)
    return PipelineConfig(
        targets=targets(settings),
        policy=PolicyConfig(required_tags=frozen(settings.policy.required_tags),
                            team_gpu_quota=frozen(settings.policy.team_gpu_quota),
                            default_team_gpu_quota=settings.policy.default_team_gpu_quota,
                            gates=gates(settings),
                            approvers={
                                (team, env): (tuple(who.user_ids), tuple(who.group_ids))
                                for team, access in settings.policy.teams.items()
                                for env, who in access.approvers.items()},
                            codeowners={
                                team: {env: tuple(who.codeowners)
                                       for env, who in access.approvers.items()}
                                for team, access in settings.policy.teams.items()}),
        manifests_dir=settings.git.manifests_dir, target_branch=settings.git.target_branch,
        run_link_base=base if base and base.startswith(("http://", "https://")) else None)


def _without_userinfo(url: str | None) -> str | None:
    """``url`` without ``user:password@``: a tracking URI may carry MLflow's credentials, and
    run links built on it go into MR text."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _sample_intent(defaults: Mapping[str, Any]) -> dict[str, Any] | None:
    """A ModelDeployment on these defaults, whose field names CEL rules may use."""
    sample = {"spec": {"model": {"name": "sample", "version": "1"},
                       "owner": {"team": "sample", "costCenter": "sample"}}}
    try:
        return resolve(defaults=defaults, intent=sample, environment=None).model_dump(
            mode="json", by_alias=True)
    except ValidationError:
        return None  # the defaults themselves are reported; skip the field check


def _target(name: str, env: Environment) -> EnvironmentTarget:
    return EnvironmentTarget(
        name=name, namespace=env.namespace, alias=env.trigger.alias, stage=env.trigger.stage,
        spec_defaults=frozen(env.spec_defaults()), approvals=env.approvals,
        auto_merge=env.auto_merge,
        allowed_gpu_types=tuple(env.allowed_gpu_types) if env.allowed_gpu_types is not None
        else None,
        allowed_regions=tuple(env.allowed_regions) if env.allowed_regions is not None else None,
        cluster_selector=frozen(env.cluster_selector),
        mig_profiles=tuple(env.mig_profiles) if env.mig_profiles is not None else None,
        priority_class_name=env.priority_class_name, zone_spread=env.zone_spread)
