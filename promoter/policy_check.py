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
from typing import TYPE_CHECKING, Any

from promoter.core import deployable, shared_base
from promoter.core.config import PipelineConfig
from promoter.core.gates import GateFacts
from promoter.core.intent import build_request
from promoter.core.lineage import run_of
from promoter.core.policy import Decision
from promoter.core.spec import API_VERSION, KIND, ModelDeployment, ModelRef
from promoter.core.verdict import (
    OPEN_PROPOSALS,
    claimed_elsewhere,
    team_quota,
    verdict,
    without_passed_quota,
)
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
from promoter.service.audit import AuditTrail
from promoter.service.ledger import StateLedger
from promoter.settings import Settings

if TYPE_CHECKING:
    from promoter.service.composition.state import StateForReading

# Why a target branch cannot be read: no GitLab token or project (ConfigError), GitLab or the
# remote unreachable (TransientError), a token GitLab refuses (AuthError, PermanentError).
UNREADABLE = (ConfigError, TransientError, AuthError, PermanentError)
# The checks that read the target branch, as `policy check` names them when it cannot.
BRANCH_CHECKS = ("deployment name owned by another model on the target branch",
                 "runtime switch under other environments' overlays")
# The half of the name check that reads the state database's ledger.
LEDGER_CHECK = "deployment name owned by another model in the ledger"
# The team's quota, when the GPUs its other deployments claim (the target branch and the
# ledger's open proposals) could not be counted and this deployment alone stays within it.
QUOTA_CHECK = "team gpu quota"


@dataclass(frozen=True)
class Subject:
    env: str
    intent_file: Path | None = None
    model: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class NotChecked:
    """Checks `policy check` could not make, and why: what could not be read."""

    checks: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class PolicyCheck:
    """The verdict, and the checks that were not made (none: all were)."""

    decision: Decision
    not_checked: tuple[NotChecked, ...] = ()


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
    unread = _Unread()
    with ExitStack() as scope:
        state = scope.enter_context(composition.state_for_reading(settings))
        if state.unreadable is not None:
            unread.add(_one_line(state.unreadable), LEDGER_CHECK)
        branches: BranchReader | None = None
        branch_unread: str | None = None
        try:
            branches = scope.enter_context(composition.branch_reader(settings))
            tree = deployable.deployment_tree(config, branches, deployment.name)
        except UNREADABLE as exc:
            # Said, not failed: a check on a laptop or in offline CI still answers the rest.
            branches, branch_unread = None, _branch_reason(exc)
            unread.add(branch_unread, *BRANCH_CHECKS)
            tree = shared_base.DeploymentTree({}, ())
        deployable.refuse_undeployable_on(
            tree, candidate, ledger=StateLedger(state.db) if state.db is not None else _NoOwners(),
            registry=registry, runtimes=rendering.runtimes)
        claimed, quota_unread = _claimed(config, subject.env, deployment, branches,
                                         branch_unread, state)
        history = _history(settings, state)
        facts = GateFacts(model=name, version=version, env=subject.env,
                          namespace=target.namespace, tags=tags, metrics=metrics, params=params,
                          run_doubt=run_doubt, now=time.time(),
                          live_since=lambda where: history.live_since(name, version, where),
                          history_doubt=history.doubt, claimed=claimed)
        decision = verdict(config.policy, target, deployment, facts)
    if quota_unread is not None:
        # Counted without what could not be read: a denial stands (the others only add to
        # it), a pass is no answer, so it is not shown as one but as not checked.
        judged = without_passed_quota(decision)
        if judged != decision:
            decision = judged
            unread.add(quota_unread, QUOTA_CHECK)
    if decision.allowed:
        # What rendering refuses stops the pipeline after an allowed verdict (a KServe host
        # name too long): the renderer's own check, so not "allowed" here either.
        rendering.check(request)
    return PolicyCheck(decision, unread.grouped())


def _claimed(config: PipelineConfig, env: str, deployment: ModelDeployment,
             branches: BranchReader | None, branch_unread: str | None,
             state: StateForReading) -> tuple[dict[str, int], str | None]:
    """What the team's other deployments claim (claimed_elsewhere, as the pipeline counts
    them), and why it could not be counted (None: it was, or the team has no quota)."""
    if team_quota(config.policy, deployment) is None:
        return {}, None
    if branches is None:
        return {}, branch_unread
    if state.unreadable is not None:
        return {}, _one_line(state.unreadable)
    try:
        return claimed_elsewhere(config, lambda: branches, env, deployment,
                                 lambda: _open_proposals_in(state)), None
    except UNREADABLE as exc:   # the branch or a proposal's branch, gone since it was read
        return {}, _branch_reason(exc)


def claimed_by_others(settings: Settings, config: PipelineConfig, env: str,
                      deployment: ModelDeployment) -> dict[str, int]:
    """{team: GPUs} the team's other deployments claim in ``env``, as the pipeline counts them
    (core.verdict.claimed_elsewhere): what the target branch runs and the open proposals of the
    state database's ledger would add. `forecast` and `rightsize` bound with it (`policy check`
    counts the same way, on the branch and state it already opened), so none allows what the
    pipeline would deny. The branches (composition.branch_reader) and the state database are
    asked only when a team quota is configured, read-only; a target branch or state database
    that cannot be read then fails the command: their answer is a number, not a verdict that
    can name what it did not check."""
    from promoter.service import composition

    with ExitStack() as scope:
        def proposals() -> Iterable[DeployedState]:
            state = scope.enter_context(composition.state_for_reading(settings))
            if state.unreadable is not None:
                raise state.unreadable
            return _open_proposals_in(state)

        return claimed_elsewhere(
            config, lambda: scope.enter_context(composition.branch_reader(settings)), env,
            deployment, proposals)


def _open_proposals_in(state: StateForReading) -> Iterable[DeployedState]:
    """The ledger's rows of open proposals; none when no state database exists yet."""
    return StateLedger(state.db).with_statuses(OPEN_PROPOSALS) if state.db is not None else ()


def _history(settings: Settings, state: StateForReading) -> AuditTrail | _UnreadHistory:
    """The audit trail, read-only: files beside SQLite's state.db (read without creating the
    directory), or the PostgreSQL state's tables, when that state could be read."""
    if not settings.state.url:
        return AuditTrail(settings.state_dir)
    if state.db is None:
        return _UnreadHistory(_one_line(state.unreadable) if state.unreadable else "")
    return AuditTrail(settings.state_dir, state.db)


class _UnreadHistory:
    """The audit trail of a state database that could not be read: nothing was live anywhere
    as far as it can tell (a staging-first gate denies: fail closed), and it says why."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def live_since(self, model: str, version: str, env: str) -> float | None:
        return None

    def doubt(self) -> str | None:
        return f"the audit trail could not be read: {self._reason}"


class _Unread:
    """Checks not made, gathered by why (what could not be read), in the order met."""

    def __init__(self) -> None:
        self._checks: dict[str, list[str]] = {}

    def add(self, reason: str, *checks: str) -> None:
        self._checks.setdefault(reason, []).extend(checks)

    def grouped(self) -> tuple[NotChecked, ...]:
        return tuple(NotChecked(tuple(checks), reason) for reason, checks in self._checks.items())


class _NoOwners:
    """The ledger of a state directory that has none yet: nobody owns any name."""

    def owners(self, name: str) -> frozenset[str]:
        return frozenset()


def _branch_reason(exc: PromoterError) -> str:
    return f"the target branch could not be read: {_one_line(exc)}"


def _one_line(exc: PromoterError) -> str:
    """``exc``'s message on one line, without its hint (written for the pipeline's job: "promoter
    retries the job") and without a URL's credentials (git's stderr may name a remote that
    carries one)."""
    return without_url_userinfo(" ".join(exc.message.split()))
