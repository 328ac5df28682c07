"""The CI gate's policy check: each overlay's declared placement against promoter.yaml.

For every overlay (``<model>/overlays/<env>``) the built resources are read back into a partial
intent (core.declared_intent), resolved for the environment named by the directory (the
placement only as the tree declares it, never from promoter.yaml's defaults), and judged
by the pipeline's own rules: allowed GPU types, allowed regions, who may deploy where
(policy.teams, against the overlay's namespace), and the team GPU quota. The quota is judged on
the sum over every overlay of the tree (core.policy_scope), not one overlay at a time: in CI the
tree is what the merge request leaves on the target branch, so two models of one team cannot
each pass alone and together exceed it. Rules on MLflow facts (required tags, metric and CEL
gates, staging-first) need the registry and are not checked here. An overlay that reads a
local path outside the manifests tree, or a remote reference, is denied (gitops.references):
the gate never sees a change made there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.error import YAMLError

from promoter.core.config import PipelineConfig
from promoter.core.declared_intent import declared_intent, declared_namespace
from promoter.core.gates import GateFacts, TeamPermissionGate, evaluate
from promoter.core.intent import resolve_intent
from promoter.core.policy import (
    TEAM_GPU_QUOTA,
    Decision,
    PolicyRules,
    RuleResult,
    decide,
    gpu_claim,
)
from promoter.core.policy_scope import GpuClaim, overlays_to_check, team_quota_totals
from promoter.core.spec import ModelDeployment
from promoter.core.tree_facts import TEAM
from promoter.errors import PromoterError, UserError
from promoter.gitops.references import (
    UNREADABLE,
    manifests_tree,
    reached_paths,
    refuse_references_outside,
)
from promoter.settings import Settings
from promoter.validation import find_overlays
from promoter.yaml_read import core_schema_yaml, load_documents, one_line


@dataclass(frozen=True)
class OverlayVerdict:
    overlay: Path
    env: str
    decision: Decision


@dataclass(frozen=True)
class _Declared:
    """An overlay read back: what it deploys and where, or why it could not be read."""

    overlay: Path
    env: str
    deployment: ModelDeployment | None = None
    namespace: str = ""
    error: str = ""


def _declared(config: PipelineConfig, overlay: Path, tree: Path,
              build: Callable[[Path], str], team_projects: bool) -> _Declared:
    """``team_projects``: policy.teams is set, so the ApplicationSet files each overlay under
    its team's AppProject (gitops_scaffold), chosen by the overlay's team annotation."""
    env = overlay.name
    try:
        refuse_references_outside(overlay, tree)
        documents = [d for d in load_documents(build(overlay), what="kustomize output")
                     if isinstance(d, dict)]
        target = config.targets.environment(env)
        deployment = resolve_intent(config.targets, _as_declared(declared_intent(documents)),
                                    env, origin=str(overlay))
        namespace = declared_namespace(documents) or target.namespace
        if namespace != target.namespace:
            raise UserError(f"the overlay's resources are in namespace {namespace!r}, not in "
                            f"{env}'s {target.namespace!r}, where promoter renders them")
        if team_projects:  # else one shared project, which reads no annotation
            _refuse_another_project_team(overlay, deployment.spec.owner.team)
    except (PromoterError, YAMLError) as exc:
        return _Declared(overlay, env,
                         error=exc.message if isinstance(exc, PromoterError) else str(exc))
    return _Declared(overlay, env, deployment, namespace)


def _as_declared(intent: dict[str, Any]) -> dict[str, Any]:
    """``intent`` (core.declared_intent, changed in place) with every field the rules judge
    set to what the tree declares, also where it declares nothing, so that resolve_intent's
    promoter.yaml ``defaults`` (and an environment's) cannot fill it in. Before a render they
    describe what promoter writes into the manifests (a default GPU type becomes the node
    selector), and the pipeline's own check judges them so; here the tree is judged as it
    is, and a pod the tree leaves unpinned runs anywhere, whatever the defaults say. Unset:
    no GPU, any GPU type and region (which the rules deny where the environment restricts
    them), and one replica (a Deployment's default; an InferenceService, HPA or ScaledObject
    always bounds it, core.declared_replicas)."""
    spec = intent.setdefault("spec", {})
    gpu = spec.setdefault("resources", {}).setdefault("gpu", {})
    for key, unset in (("count", 0), ("type", None), ("mig", None)):
        gpu.setdefault(key, unset)
    spec.setdefault("regions", [])
    scaling = spec.setdefault("scaling", {})
    scaling.setdefault("minReplicas", 1)
    scaling.setdefault("maxReplicas", max(1, scaling["minReplicas"]))
    return intent


def _refuse_another_project_team(overlay: Path, team: str) -> None:
    """The ApplicationSet files each overlay's Application under the AppProject of the team
    its kustomization's ``commonAnnotations`` name (``promoter.dev/team``, read by Argo CD's
    git files generator), not the workloads' team label the gate judges: an MR keeping the
    label and changing the annotation would deploy under another team's project, and one
    without it stops the whole ApplicationSet (missingkey=error). Both must name one team."""
    kustomization = overlay / "kustomization.yaml"
    if not kustomization.is_file():
        return  # the files generator reads only kustomization.yaml: no Application from this
    try:
        # go-yaml's reading (yaml_read), as Argo CD's: `note: +_` is text there, and a
        # ValueError (an unexpected error of the whole gate) to ruamel's default reader.
        data = core_schema_yaml().load(kustomization.read_text(encoding="utf-8"))
    except UNREADABLE as exc:
        raise UserError(f"{kustomization.name} cannot be read as Argo CD reads it: "
                        f"{one_line(exc)}") from None
    annotations = data.get("commonAnnotations") if isinstance(data, dict) else None
    named = annotations.get(TEAM) if isinstance(annotations, dict) else None
    if named is None:
        raise UserError(f"{kustomization.name} has no commonAnnotations {TEAM}, which the "
                        f"ApplicationSet reads to choose the AppProject (team {team!r})")
    if str(named) != team:
        raise UserError(f"{kustomization.name}'s commonAnnotations {TEAM} is {str(named)!r}, "
                        f"the team whose AppProject Argo CD files it under, but its workloads "
                        f"are team {team!r}'s, the team judged here: make them one")


def _judge(config: PipelineConfig, declared: _Declared,
           quota: dict[tuple[str, str], RuleResult]) -> OverlayVerdict:
    overlay, env, deployment = declared.overlay, declared.env, declared.deployment
    if deployment is None:
        return OverlayVerdict(overlay, env, Decision((RuleResult("overlay", False,
                                                                 declared.error),)))
    target = config.targets.environment(env)
    # No quota here: ``quota`` holds it, judged on the whole tree's sum.
    rules = PolicyRules(allowed_gpu_types=target.allowed_gpu_types,
                        allowed_regions=target.allowed_regions)
    built_in = tuple(r for r in decide(deployment, env, {}, rules).results
                     if r.rule != TEAM_GPU_QUOTA)
    team_quota = quota.get((deployment.spec.owner.team, env))
    facts = GateFacts(model=deployment.spec.model.name, version=deployment.spec.model.version,
                      env=env, namespace=declared.namespace, now=time.time())
    teams = tuple(g for g in config.policy.gates if isinstance(g, TeamPermissionGate))
    return OverlayVerdict(overlay, env, Decision(
        built_in + ((team_quota,) if team_quota else ()) + tuple(evaluate(teams, deployment,
                                                                           facts))))


def check_tree(settings: Settings, roots: list[Path], build: Callable[[Path], str],
               selected: Collection[Path] | None = None) -> list[OverlayVerdict]:
    """The verdicts of the overlays under ``roots`` (only those in ``selected`` when given),
    each team's GPU quota judged on the sum over every overlay under ``roots``. ``build`` is
    `kustomize build` (the composition root's manifest checker has it)."""
    trees = {overlay: manifests_tree(overlay, root)
             for root in roots for overlay in find_overlays(root)}
    config = settings.pipeline_config()  # compiles every CEL gate: once per tree
    declared = [_declared(config, overlay, trees[overlay], build, bool(settings.policy.teams))
                for overlay in sorted(trees)]
    policy = config.policy
    quota = team_quota_totals(
        [GpuClaim(str(d.overlay), d.deployment.spec.owner.team, d.env,
                  gpu_claim(d.deployment)) for d in declared if d.deployment is not None],
        policy.team_gpu_quota, policy.default_team_gpu_quota)
    wanted = None if selected is None else {path.resolve() for path in selected}
    return [_judge(config, d, quota) for d in declared
            if wanted is None or d.overlay.resolve() in wanted]


def changed_overlays(roots: list[Path], changed: list[Path]) -> list[Path]:
    """The overlays under ``roots`` that the ``changed`` files (absolute paths: what the
    commits since a revision changed, in CI the merge request's diff base) can affect, by
    core.policy_scope's rules: each overlay's kustomizations are walked once
    (gitops.references) for the paths it reaches, so a change to another model's directory
    that an overlay reads selects it too."""
    changed_paths = [path.as_posix() for path in changed]
    # Every root's overlays in each root's selection, as before: an overlay of one root may
    # read a path under another.
    reached = {overlay.resolve().as_posix():
               sorted(path.as_posix()
                      for path in reached_paths(overlay, manifests_tree(overlay, root)))
               for root in roots for overlay in find_overlays(root)}
    selected = {path for root in roots
                for path in overlays_to_check(changed_paths, list(reached),
                                              root.resolve().as_posix(), reached)}
    return sorted(Path(path) for path in selected)
