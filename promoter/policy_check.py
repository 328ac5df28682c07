"""The policy check use case behind `promoter policy check`: gather the facts the pipeline
would gather (intent, version tags, run metrics, what was live where, the time, the target
branch and the ledger) through the adapters the pipeline uses, and ask the core's one verdict
(core.verdict) and its deployability checks (core.deployable)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promoter.core import deployable
from promoter.core.config import PipelineConfig
from promoter.core.gates import GateFacts
from promoter.core.intent import build_request
from promoter.core.lineage import run_of
from promoter.core.policy import Decision
from promoter.core.spec import API_VERSION, KIND, ModelDeployment, ModelRef
from promoter.core.verdict import OPEN_PROPOSALS, claimed_elsewhere, verdict
from promoter.rendering import load_intent_file, renderer
from promoter.service.ledger import StateLedger
from promoter.settings import Settings


@dataclass(frozen=True)
class Subject:
    env: str
    intent_file: Path | None = None
    model: str | None = None
    version: str | None = None


def check_policy(settings: Settings, subject: Subject) -> Decision:
    """The pipeline's answer for ``subject``: a UserError (exit 1) where the pipeline marks the
    version invalid, else the verdict (denied: exit 4), and for an allowed one what rendering
    refuses (exit 1). Not judged: promoter.yaml's own image settings (a modelcar runtime
    without an image repository), which a policy-only configuration for local checks lacks."""
    from promoter.service import composition

    rendering = renderer(settings)
    # The pipeline's configuration: the renderer's runtime descriptors in its targets, so the
    # intent is refused for what its runtime cannot run (a pyfunc image without image.base).
    config = composition.pipeline_config(settings, rendering)
    target = config.targets.environment(subject.env)   # unknown environment: ConfigError
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    intent: dict[str, Any] | None = None
    run_doubt: str | None = None
    model_ref = None
    registry = None
    if subject.model is not None and subject.version is not None:
        registry = composition.registry(settings)
        info = registry.model_version(subject.model, subject.version)
        tags = dict(info.tags)
        lineage = run_of(registry, info)   # the pipeline's lineage rule: the same verdict
        if lineage.run is not None:
            metrics, params = dict(lineage.run.metrics), dict(lineage.run.params)
        run_doubt = lineage.doubt
        intent = {"apiVersion": API_VERSION, "kind": KIND, **registry.intent(info)}
        model_ref = ModelRef(name=subject.model, version=subject.version)
    if subject.intent_file is not None:
        intent = load_intent_file(subject.intent_file)
    assert intent is not None  # the command requires one of the two
    # Named as the pipeline names the version, so both refuse it in the same words.
    origin = str(subject.intent_file or f"{subject.model!r} version {subject.version}")
    # The pipeline's own check of the intent (core.intent.build_request: the resolved spec,
    # then the environment's MIG profiles and the runtime's requirements), not only its
    # shape: an intent the pipeline marks invalid is invalid here too (UserError, exit 1),
    # never "allowed".
    request = build_request(config.targets, intent, subject.env, origin=origin, model=model_ref)
    deployment = request.deployment
    name, version = deployment.spec.model.name, deployment.spec.model.version
    # The pipeline's checks beside the verdict, on the same adapters it reads: the target
    # branch (name owned by another model, a runtime switch), the state database's ledger,
    # and, for a version in the registry, its config.json (vLLM fit).
    deployable.refuse_undeployable(
        config, deployable.Candidate(subject.model or name, subject.version, subject.env,
                                     deployment),
        provider=composition.provider(settings),
        ledger=StateLedger(composition.state_db(settings)),
        registry=registry, runtimes=rendering.runtimes)
    history = composition.audit_trail(settings)
    claimed = claimed_by_others(settings, config, subject.env, deployment)
    facts = GateFacts(model=name, version=version, env=subject.env, namespace=target.namespace,
                      tags=tags, metrics=metrics, params=params, run_doubt=run_doubt,
                      now=time.time(),
                      live_since=lambda where: history.live_since(name, version, where),
                      history_doubt=history.doubt,
                      claimed=claimed)
    decision = verdict(config.policy, target, deployment, facts)
    if decision.allowed:
        # What rendering refuses stops the pipeline after an allowed verdict (a KServe host
        # name too long): the renderer's own check, so not "allowed" here either.
        rendering.check(request)
    return decision


def claimed_by_others(settings: Settings, config: PipelineConfig, env: str,
                      deployment: ModelDeployment) -> dict[str, int]:
    """{team: GPUs} the team's other deployments claim in ``env``, as the pipeline counts them
    (core.verdict.claimed_elsewhere): what the target branch runs and the open proposals of the
    state database's ledger would add. `policy check`, `forecast` and `rightsize` all judge and
    bound with it, so none allows what the pipeline would deny. The forge and the state
    database are asked only when a team quota is configured."""
    from promoter.service import composition

    return claimed_elsewhere(
        config, lambda: composition.provider(settings), env, deployment,
        lambda: StateLedger(composition.state_db(settings)).with_statuses(OPEN_PROPOSALS))
