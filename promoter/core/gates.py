"""Promotion gates from promoter.yaml: metric thresholds, staging first, who may deploy where,
and custom CEL rules. Pure: the configuration is compiled once (a bad gate is a ConfigError at
start, not a failure at promotion time) and evaluated over plain facts.

Each result carries a stable rule id (``metric:auc``, ``staging-first``, ``team-permission``,
``cel:<name>``) and a message that says what to change; the same text reaches the MR, the
MLflow ``reason`` tag and ``promoter policy check``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from promoter.core.cel import CelRule
from promoter.core.policy import RuleResult
from promoter.core.spec import ModelDeployment
from promoter.errors import ConfigError

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne}
_CHECK = re.compile(r"^\s*([A-Za-z0-9_.:/\-]+)\s*(>=|<=|==|!=|>|<)\s*"
                    r"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class GateFacts:
    """What the gates look at, gathered by the pipeline (or `policy check`) from its ports."""

    model: str
    version: str
    env: str
    namespace: str
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    now: float = 0.0
    # env -> when this version became live there (merged), for the staging-first gate;
    # None for an environment where it never was.
    live_since: Callable[[str], float | None] = field(default=lambda env: None)
    # Why some of what live_since reads does not count (the audit trail does not verify from
    # a line on: entries past it are not promoter's for sure), or None; asked only when the
    # staging-first gate denies, so its reason says why a version live there may not count.
    history_doubt: Callable[[], str | None] = field(default=lambda: None)
    # {team: GPUs} (count x maxReplicas) the deployment's team's OTHER deployments claim in
    # this environment on the target branch, for the team quota (core.verdict.claimed_elsewhere,
    # for the pipeline and `policy check` alike); empty when no team quota is configured.
    claimed: Mapping[str, int] = field(default_factory=dict)
    # Why the run the version names may not vouch for it (core.lineage: its files are from
    # elsewhere); gates that read the run's metrics or params deny with it.
    run_doubt: str | None = None


@dataclass(frozen=True)
class MetricGate:
    metric: str
    op: str
    value: float
    environments: tuple[str, ...] = ()

    @classmethod
    def parse(cls, check: str, environments: tuple[str, ...] = ()) -> MetricGate:
        found = _CHECK.fullmatch(check)
        if not found:
            raise ConfigError(f"metric gate {check!r} is not 'NAME OP NUMBER'",
                              hint="for example 'auc >= 0.9' or 'latency_p99_ms <= 50'")
        return cls(found[1], found[2], float(found[3]), environments)

    @property
    def rule_id(self) -> str:
        return f"metric:{self.metric}"

    def evaluate(self, deployment: ModelDeployment, facts: GateFacts) -> RuleResult:
        wanted = f"{self.metric} {self.op} {self.value:g}"
        if facts.run_doubt:
            return RuleResult(self.rule_id, False, f"{facts.run_doubt} (required: {wanted})")
        actual = facts.metrics.get(self.metric)
        if actual is None:
            return RuleResult(self.rule_id, False, f"the run of version {facts.version} logged "
                              f"no metric {self.metric!r}; log it (required: {wanted})")
        if not math.isfinite(actual):
            # NaN compares false and ±inf satisfies one side of every threshold: a diverged or
            # broken run must not pass a gate (or fail it as if merely below the bar).
            shown = "NaN" if math.isnan(actual) else f"{actual:g}"
            return RuleResult(self.rule_id, False, f"{self.metric} is {shown}, not a finite "
                              f"number (required: {wanted}); promote a version whose run "
                              "logged a real value")
        if _COMPARE[self.op](float(actual), self.value):
            return RuleResult(self.rule_id, True, f"{self.metric} = {actual:g} ({wanted})")
        return RuleResult(self.rule_id, False, f"{self.metric} = {actual:g} fails {wanted}; "
                          "promote a version whose run meets it")


@dataclass(frozen=True)
class StagingFirstGate:
    after: str                    # the environment the version must have been live in
    soak_seconds: float
    environments: tuple[str, ...] = ()
    rule_id: str = "staging-first"

    def evaluate(self, deployment: ModelDeployment, facts: GateFacts) -> RuleResult:
        since = facts.live_since(self.after)
        if since is None:
            return RuleResult(self.rule_id, False, f"version {facts.version} was never live in "
                              f"{self.after}; promote it to {self.after} first"
                              + _doubted(facts))
        soaked = facts.now - since
        if soaked < self.soak_seconds:
            left = self.soak_seconds - soaked
            return RuleResult(self.rule_id, False, f"version {facts.version} has been live in "
                              f"{self.after} for {_duration(soaked)}; it needs "
                              f"{_duration(self.soak_seconds)} (another {_duration(left)})"
                              + _doubted(facts))
        return RuleResult(self.rule_id, True, f"live in {self.after} for {_duration(soaked)}")


def _doubted(facts: GateFacts) -> str:
    doubt = facts.history_doubt()
    return f" ({doubt})" if doubt else ""


@dataclass(frozen=True)
class TeamAccess:
    environments: tuple[str, ...] | None = None   # None: every environment
    namespaces: tuple[str, ...] | None = None     # None: the environments' own namespaces
    # Registered-model name globs the team owns. The team is what a model version declares
    # about itself (deploy.owner.team), so without this binding any model may claim any team.
    models: tuple[str, ...] | None = None         # None: the claim is trusted

    def owns(self, model: str) -> bool:
        return self.models is None or any(fnmatchcase(model, glob) for glob in self.models)


@dataclass(frozen=True)
class TeamPermissionGate:
    teams: Mapping[str, TeamAccess]
    environments: tuple[str, ...] = ()
    rule_id: str = "team-permission"

    def evaluate(self, deployment: ModelDeployment, facts: GateFacts) -> RuleResult:
        team = deployment.spec.owner.team
        access = self.teams.get(team)
        if access is None:
            return RuleResult(self.rule_id, False, f"team {team!r} may not deploy with "
                              "promoter; ask the platform team to add it under policy.teams")
        if not access.owns(facts.model):
            return RuleResult(self.rule_id, False, f"model {facts.model!r} is not one of team "
                              f"{team!r}'s models (policy.teams.{team}.models); a model may "
                              "only declare the team that owns it")
        if access.environments is not None and facts.env not in access.environments:
            allowed = ", ".join(access.environments) or "none"
            return RuleResult(self.rule_id, False, f"team {team!r} may not deploy to "
                              f"{facts.env} (allowed: {allowed})")
        if access.namespaces is not None and facts.namespace not in access.namespaces:
            return RuleResult(self.rule_id, False, f"team {team!r} may not deploy into "
                              f"namespace {facts.namespace} (allowed: "
                              f"{', '.join(access.namespaces) or 'none'})")
        return RuleResult(self.rule_id, True, f"team {team!r} may deploy to {facts.env}")


@dataclass(frozen=True)
class CelGate:
    rule: CelRule
    environments: tuple[str, ...] = ()

    @property
    def rule_id(self) -> str:
        return f"cel:{self.rule.name}"

    def evaluate(self, deployment: ModelDeployment, facts: GateFacts) -> RuleResult:
        if facts.run_doubt and self.rule.reads_run:
            return RuleResult(self.rule_id, False, f"{self.rule.denial} ({facts.run_doubt})")
        outcome, detail = self.rule.evaluate({
            "model": facts.model, "version": facts.version, "env": facts.env,
            "tags": dict(facts.tags), "metrics": dict(facts.metrics),
            "params": dict(facts.params),
            "intent": deployment.model_dump(mode="json", by_alias=True)})
        return RuleResult(self.rule_id, outcome, detail)


Gate = MetricGate | StagingFirstGate | TeamPermissionGate | CelGate


def judges_the_version(gate: Gate) -> bool:
    """Whether ``gate`` judges the model version itself (its run's metrics or params, its
    soak elsewhere) rather than where and how it runs: a change that only re-sizes a version
    already promoted (a forecast or right-sizing MR) has passed those gates when promoted."""
    if isinstance(gate, MetricGate | StagingFirstGate):
        return True
    return isinstance(gate, CelGate) and gate.rule.reads_run


def evaluate(gates: tuple[Gate, ...], deployment: ModelDeployment,
             facts: GateFacts) -> list[RuleResult]:
    """Every gate that applies to ``facts.env``, each evaluated (a denial lists them all)."""
    return [gate.evaluate(deployment, facts) for gate in gates
            if not gate.environments or facts.env in gate.environments]


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
