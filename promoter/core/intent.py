"""An intent document + the configured targets → the resolved deployment and its render request.

Pure: the document arrives already parsed (from a file, a logged artifact or ``deploy.*`` tags);
reading files and templates is the callers' business. Every validation problem becomes one
``UserError`` naming each field, whatever the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from promoter.core import runtimes
from promoter.core.config import Targets
from promoter.core.problems import describe
from promoter.core.render import ImagePin, Lineage, RenderRequest
from promoter.core.spec import API_VERSION, KIND, ModelDeployment, ModelRef, resolve
from promoter.errors import PermanentError, UserError

# Fields of the intent that every environment shares: an environment may not override them.
# (Ownership decides quotas and cost labels; letting staging say another team would let one
# environment escape the quota the base declares. The description is rendered only into the
# base, which every environment shares: a per-environment one would be silently dropped.)
SHARED_FIELDS = ("owner", "model", "runtime", "description", "environments")


class InvalidIntent(PermanentError):
    """The version's deployment intent cannot be deployed as it is (tagged status=invalid)."""

    kind = "invalid_intent"


def check_document(document: Any, *, origin: str) -> dict[str, Any]:
    """Refuse anything that is not a ModelDeployment mapping (before any field is read)."""
    if not isinstance(document, dict):
        raise UserError(f"{origin} must hold a YAML mapping (a ModelDeployment), "
                        f"not {type(document).__name__}")
    problems = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION} (got {document.get('apiVersion')!r})")
    if document.get("kind") != KIND:
        problems.append(f"kind: must be {KIND} (got {document.get('kind')!r})")
    if problems:
        raise UserError(f"{origin} is not a ModelDeployment:\n  " + "\n  ".join(problems))
    return document


def check_shape(intent: Mapping[str, Any], *, origin: str) -> None:
    """The containers the merge walks must be mappings; anything else is named, not a crash."""
    problems = [f"{field}: must be a mapping, not {type(intent[field]).__name__}"
                for field in ("metadata", "spec")
                if intent.get(field) is not None and not isinstance(intent[field], Mapping)]
    spec = intent.get("spec")
    environments = spec.get("environments") if isinstance(spec, Mapping) else None
    if environments is not None and not isinstance(environments, Mapping):
        problems.append("spec.environments: must be a mapping of environment name to "
                        f"overrides, not {type(environments).__name__}")
    elif environments:
        for env, overrides in environments.items():
            if not isinstance(env, str):   # YAML keys `1:`, `null:`, `true:`, `? [a, b]`
                problems.append(f"spec.environments: {env!r} is not an environment name; "
                                "write each name as text")
                continue
            where = f"spec.environments.{env}"
            if overrides is not None and not isinstance(overrides, Mapping):
                problems.append(f"{where}: must be a mapping of overrides, "
                                f"not {type(overrides).__name__}")
            elif overrides:
                problems += [f"{where}.{field}: is shared by every environment and cannot be "
                             "overridden per environment" for field in SHARED_FIELDS
                             if field in overrides]
    if problems:
        raise UserError(f"{origin} is not a valid ModelDeployment:\n  " + "\n  ".join(problems),
                        hint="fix every field listed")


def resolve_intent(targets: Targets, intent: Mapping[str, Any], environment: str | None, *,
                   origin: str, model: ModelRef | None = None) -> ModelDeployment:
    check_shape(intent, origin=origin)
    env_defaults = targets.environment(environment).spec_defaults if environment else {}
    unknown = set((intent.get("spec") or {}).get("environments") or {}) - set(targets.environments)
    if unknown:
        raise UserError(f"{origin}: spec.environments names unknown environment(s) "
                        f"{', '.join(sorted(unknown))}",
                        hint=f"configured environments: {', '.join(sorted(targets.environments))}")
    try:
        return resolve(defaults=targets.defaults, intent=intent, environment=environment,
                       environment_defaults=env_defaults, model=model)
    except ValidationError as exc:
        where = f" for environment {environment}" if environment else ""
        raise UserError(f"{origin} is not a valid ModelDeployment{where}:\n  "
                        + "\n  ".join(describe(exc)), hint="fix every field listed") from None


def build_request(targets: Targets, intent: Mapping[str, Any], environment: str, *, origin: str,
                  lineage: Lineage | None = None, image: ImagePin | None = None,
                  model: ModelRef | None = None,
                  modelcar: ImagePin | None = None) -> RenderRequest:
    """The base (no environment overrides) and the environment's deployment, ready to render.

    ``image`` pins the pyfunc serving image, ``modelcar`` the signed modelcar; the renderer
    uses the one the runtime's descriptor names as its artifact.
    """
    env = targets.environment(environment)
    base = resolve_intent(targets, intent, None, origin=origin, model=model)
    deployment = resolve_intent(targets, intent, environment, origin=origin, model=model)
    mig = deployment.spec.resources.gpu.mig
    if mig and env.mig_profiles is not None and mig not in env.mig_profiles:
        offered = ", ".join(env.mig_profiles) or "none"
        raise UserError(f"{origin}: spec.resources.gpu.mig {mig!r} is not a MIG profile the "
                        f"{environment} GPU nodes offer ({offered})",
                        hint=f"environments.{environment}.mig_profiles in promoter.yaml lists them")
    if targets.runtimes:
        descriptor = runtimes.check_environment(base, deployment, environment, targets.runtimes)
        problem = runtimes.baseless_image_problem(
            descriptor, image_built=targets.image_repository is not None,
            base_configured=targets.image_base_configured, demo=targets.demo)
        problem = problem or runtimes.shell_less_modelcar_problem(
            descriptor, deployment,
            modelcar_built=(targets.modelcar_repository or targets.image_repository) is not None,
            base_configured=targets.modelcar_base_configured, demo=targets.demo)
        if problem:
            raise UserError(f"{origin}: {problem}")
    if image is None and targets.image_repository:
        image = ImagePin(repository=targets.image_repository.format(name=deployment.name))
    return RenderRequest(base=base, deployment=deployment, environment=environment,
                         namespace=env.namespace, lineage=lineage or Lineage(), image=image,
                         modelcar=modelcar, cost_labels=targets.cost_labels,
                         priority_class_name=env.priority_class_name, zone_spread=env.zone_spread,
                         image_base_configured=targets.image_base_configured, demo=targets.demo)
