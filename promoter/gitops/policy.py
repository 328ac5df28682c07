"""The CI gate's policy check: each overlay's declared placement against promoter.yaml.

For every overlay (``<model>/overlays/<env>``) the built resources are read back into a partial
intent (core.declared_intent), resolved for the environment named by the directory, and judged
by the pipeline's own rules: allowed GPU types, allowed regions, the team GPU quota, and who
may deploy where (policy.teams, against the overlay's namespace). Rules on MLflow facts
(required tags, metric and CEL gates, staging-first) need the registry and are not checked here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from promoter.core.declared_intent import declared_intent
from promoter.core.gates import GateFacts, TeamPermissionGate, evaluate
from promoter.core.intent import resolve_intent
from promoter.core.policy import Decision, PolicyRules, RuleResult, decide
from promoter.errors import PromoterError
from promoter.settings import Settings
from promoter.validation import find_overlays


@dataclass(frozen=True)
class OverlayVerdict:
    overlay: Path
    env: str
    decision: Decision


def check_overlay(settings: Settings, overlay: Path,
                  build: Callable[[Path], str]) -> OverlayVerdict:
    """``build`` is `kustomize build` (the composition root's manifest checker has it)."""
    env = overlay.name
    try:
        documents = [d for d in YAML(typ="safe", pure=True).load_all(build(overlay))
                     if isinstance(d, dict)]
        config = settings.pipeline_config()
        target = config.targets.environment(env)
        deployment = resolve_intent(config.targets, declared_intent(documents), env,
                                    origin=str(overlay))
    except (PromoterError, YAMLError) as exc:
        message = exc.message if isinstance(exc, PromoterError) else str(exc)
        return OverlayVerdict(overlay, env, Decision((RuleResult("overlay", False, message),)))
    namespace = next((str(d["metadata"]["namespace"]) for d in documents
                      if (d.get("metadata") or {}).get("namespace")), target.namespace)
    rules = PolicyRules(allowed_gpu_types=target.allowed_gpu_types,
                        allowed_regions=target.allowed_regions,
                        team_gpu_quota=config.policy.team_gpu_quota,
                        default_team_gpu_quota=config.policy.default_team_gpu_quota)
    built_in = decide(deployment, env, {}, rules)
    facts = GateFacts(model=deployment.spec.model.name, version=deployment.spec.model.version,
                      env=env, namespace=namespace, now=time.time())
    teams = tuple(g for g in config.policy.gates if isinstance(g, TeamPermissionGate))
    return OverlayVerdict(overlay, env,
                          Decision(built_in.results + tuple(evaluate(teams, deployment, facts))))


def check_tree(settings: Settings, roots: list[Path],
               build: Callable[[Path], str]) -> list[OverlayVerdict]:
    overlays = sorted({overlay for root in roots for overlay in find_overlays(root)})
    return [check_overlay(settings, overlay, build) for overlay in overlays]
