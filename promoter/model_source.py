"""Render input from the MLflow registry: `promoter render MODEL --version N`.

The intent comes from the version's ``deploy.*`` tags and a logged ``modeldeployment.yaml``
(the registry adapter merges them); lineage (run id, source) from the version itself, the run
id only when the version's files come from that run (core.lineage.run_of), as a promotion
writes it.
"""

from __future__ import annotations

from promoter.core import lineage
from promoter.core.render import Lineage, RenderRequest
from promoter.core.spec import API_VERSION, KIND, ModelRef
from promoter.ports.registry import ModelVersionInfo, Registry
from promoter.rendering import build_request
from promoter.settings import Settings


def intent_document(registry: Registry, version: ModelVersionInfo) -> dict[str, object]:
    return {"apiVersion": API_VERSION, "kind": KIND, **registry.intent(version)}


def request_from_registry(settings: Settings, model: str, version: str, env: str,
                          registry: Registry) -> RenderRequest:
    settings.environment(env)  # unknown environment: fail before any network call
    info = registry.model_version(model, version)
    # MLflow lets whoever registers a version name any run beside any source: the annotation
    # names a run only when the version's files are that run's, else none (the pipeline's rule).
    origin = lineage.run_of(registry, info)
    return build_request(settings, intent_document(registry, info), env,
                         origin=f"MLflow model {model!r} version {version} (deploy.* tags)",
                         lineage=Lineage(run_id=origin.run.run_id if origin.run else None,
                                         source=info.source),
                         model=ModelRef(name=model, version=version))
