"""The policy check use case behind `promoter policy check`: gather the facts the pipeline
would gather (intent, version tags, run metrics, what was live where, the time, the target
branch and the ledger), and ask the core's one verdict (core.verdict) and its deployability
checks (core.deployable).

A check, so read-only and usable offline: the target branch is read through
composition.branch_reader (GitLab's API, or a throwaway fetch of the local provider's remote;
never the provider's shared clone), the ledger only from a state database that exists
(composition.existing_state_db), and nothing is written to the state directory. When the
target branch cannot be read (no GitLab token, no network), the checks that need it are
reported as not made instead of failing the whole check."""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promoter.core import deployable, shared_base
from promoter.core.config import PipelineConfig
from promoter.core.gates import GateFacts
from promoter.core.intent import build_request
from promoter.core.lineage import run_of
from promoter.core.policy import Decision
from promoter.core.spec import API_VERSION, KIND, ModelDeployment, ModelRef
from promoter.core.verdict import OPEN_PROPOSALS, claimed_elsewhere, verdict
from promoter.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    PromoterError,
    TransientError,
)
from promoter.ports.git import BranchReader
from promoter.ports.pipeline import DeployedState
from promoter.redaction import without_url_userinfo
from promoter.rendering import load_intent_file, renderer
from promoter.service.ledger import StateLedger
from promoter.settings import Settings

# Why a target branch cannot be read: no GitLab token or project (ConfigError), GitLab or the
# remote unreachable (TransientError), a token GitLab refuses (AuthError, PermanentError).
UNREADABLE = (ConfigError, TransientError, AuthError, PermanentError)
# The checks that read the target branch, as `policy check` names them when it cannot.
BRANCH_CHECKS = ("deployment name owned by another model on the target branch",
                 "runtime switch under other environments' overlays")


@dataclass(frozen=True)
class Subject:
    env: str
    intent_file: Path | None = None
    model: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class PolicyCheck:
    """The verdict, and why BRANCH_CHECKS were not made (None: they were)."""

    decision: Decision
    branch_unread: str | None = None


def check_policy(settings: Settings, subject: Subject) -> PolicyCheck:
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
    # The pipeline's checks beside the verdict, on what it reads (read-only here): the target
    # branch (name owned by another model, a runtime switch), the state database's ledger,
    # and, for a version in the registry, its config.json (vLLM fit).
    candidate = deployable.Candidate(subject.model or name, subject.version, subject.env,
                                     deployment)
    state = composition.existing_state_db(settings)
    with ExitStack() as scope:
        branches: BranchReader | None = None
        branch_unread = None
        try:
            branches = scope.enter_context(composition.branch_reader(settings))
            tree = deployable.deployment_tree(config, branches, deployment.name)
        except UNREADABLE as exc:
            # Said, not failed: a check on a laptop or in offline CI still answers the rest.
            branches, branch_unread = None, _one_line(exc)
            tree = shared_base.DeploymentTree({}, ())
        deployable.refuse_undeployable_on(
            tree, candidate, ledger=StateLedger(state) if state is not None else _NoOwners(),
            registry=registry, runtimes=rendering.runtimes)
        claimed = claimed_by_others(settings, config, subject.env, deployment, branches)
    history = composition.audit_trail(settings)
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
    return PolicyCheck(decision, branch_unread)


def claimed_by_others(settings: Settings, config: PipelineConfig, env: str,
                      deployment: ModelDeployment,
                      branches: BranchReader | None = None) -> dict[str, int]:
    """{team: GPUs} the team's other deployments claim in ``env``, as the pipeline counts them
    (core.verdict.claimed_elsewhere): what the target branch runs and the open proposals of the
    state database's ledger would add. `policy check`, `forecast` and `rightsize` all judge and
    bound with it, so none allows what the pipeline would deny. The branches (``branches``, or
    composition.branch_reader's) and the state database are asked only when a team quota is
    configured, read-only; a target branch that cannot be read then fails the command (a quota
    is a rule of the verdict, not a check to skip)."""
    from promoter.service import composition

    with ExitStack() as scope:
        def reader() -> BranchReader:
            if branches is not None:
                return branches
            return scope.enter_context(composition.branch_reader(settings))

        return claimed_elsewhere(config, reader, env, deployment,
                                 lambda: _open_proposals(settings))


def _open_proposals(settings: Settings) -> Iterable[DeployedState]:
    """The ledger's rows of open proposals; none when no state database exists yet."""
    from promoter.service import composition

    state = composition.existing_state_db(settings)
    return StateLedger(state).with_statuses(OPEN_PROPOSALS) if state is not None else ()


class _NoOwners:
    """The ledger of a state directory that has none yet: nobody owns any name."""

    def owners(self, name: str) -> frozenset[str]:
        return frozenset()


def _one_line(exc: PromoterError) -> str:
    """``exc``'s message on one line, without its hint (written for the pipeline's job: "promoter
    retries the job") and without a URL's credentials (git's stderr may name a remote that
    carries one)."""
    return without_url_userinfo(" ".join(exc.message.split()))
