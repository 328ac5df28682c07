"""The ``policy`` section of promoter.yaml: rules, gates and team permissions, validated at load
and compiled once into the core's gate values (core.gates), so a bad gate — an unknown rule
name, a metric check that does not parse, a CEL syntax error or unknown field — stops promoter
at start with the path of the mistake, instead of failing a promotion later."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from promoter.core.cel import CelRule
from promoter.core.codeowners import owner_problem
from promoter.core.gates import (
    CelGate,
    Gate,
    MetricGate,
    StagingFirstGate,
    TeamAccess,
    TeamPermissionGate,
)
from promoter.core.naming import label_problem
from promoter.errors import ConfigError
from promoter.settings_section import Section as _Section


class MetricGateSettings(_Section):
    rule: Literal["metric"]
    check: str = Field(description="'NAME OP NUMBER' over the version's run, e.g. 'auc >= 0.9'")
    environments: list[str] = Field(default_factory=list, description="empty: every environment")

    @field_validator("check")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            MetricGate.parse(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value


class StagingFirstSettings(_Section):
    rule: Literal["staging_first"]
    after: str = "staging"
    soak_seconds: float = Field(default=0, ge=0)
    environments: list[str] = Field(default_factory=lambda: ["production"])


class CelGateSettings(_Section):
    rule: Literal["cel"]
    name: str
    expression: str = Field(max_length=4096)
    message: str = ""
    environments: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = label_problem(value)
        if problem:
            raise ValueError(f"rule name {value!r} {problem}")
        return value


GateSettings = Annotated[MetricGateSettings | StagingFirstSettings | CelGateSettings,
                         Field(discriminator="rule")]


class Approvers(_Section):
    user_ids: list[int] = Field(default_factory=list)
    group_ids: list[int] = Field(default_factory=list)
    codeowners: list[str] = Field(default_factory=list, description="@user or @group/path")

    @field_validator("codeowners")
    @classmethod
    def _owners(cls, value: list[str]) -> list[str]:
        for owner in value:
            problem = owner_problem(owner)
            if problem:
                raise ValueError(problem)
        return value


class TeamSettings(_Section):
    environments: list[str] | None = None
    namespaces: list[str] | None = None
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, description="registered-model name globs the team owns; set for every "
        "team or none")
    approvers: dict[str, Approvers] = Field(default_factory=dict, description="per environment")


class PolicySettings(_Section):
    required_tags: dict[str, str] = Field(default_factory=dict)
    team_gpu_quota: dict[str, int] = Field(default_factory=dict)
    default_team_gpu_quota: int | None = Field(
        default=None, ge=0, description="quota of a team without a team_gpu_quota entry")
    gates: list[GateSettings] = Field(default_factory=list)
    teams: dict[str, TeamSettings] = Field(
        default_factory=dict, description="who may deploy where; empty: every team everywhere")

    @model_validator(mode="after")
    def _bind_every_team_or_none(self) -> PolicySettings:
        # A team left unbound could be claimed by any model, which would undo the binding of
        # all the others.
        unbound = sorted(team for team, access in self.teams.items() if access.models is None)
        if unbound and len(unbound) < len(self.teams):
            raise ValueError(f"policy.teams: {', '.join(unbound)} set(s) no models while other "
                             "teams do; give every team its models (globs of registered-model "
                             "names) or none")
        return self

    @model_validator(mode="after")
    def _quotas_need_known_teams(self) -> PolicySettings:
        # A quota is per team name, and the name is the model owner's deploy.owner.team: unless
        # policy.teams lists the teams (an unlisted one is denied), an owner names a new team
        # and gets a fresh quota (the default) or none at all.
        if (self.team_gpu_quota or self.default_team_gpu_quota is not None) and not self.teams:
            raise ValueError("policy.team_gpu_quota and policy.default_team_gpu_quota need "
                             "policy.teams: without it a model owner names a team no quota "
                             "lists and escapes the quota; list the teams (with their models, "
                             "so that a model can only declare the team that owns it)")
        unknown = sorted(set(self.team_gpu_quota) - set(self.teams))
        if unknown:
            raise ValueError(f"policy.team_gpu_quota: {', '.join(unknown)} not in policy.teams "
                             "(a quota no deployment can be held to)")
        return self


def compile_gates(policy: PolicySettings, environments: Mapping[str, Any],
                  sample_intent: Mapping[str, Any] | None) -> tuple[Gate, ...]:
    """The core's gates; ConfigError naming the gate for an environment that does not exist
    or an expression that cannot work."""
    gates: list[Gate] = []
    for index, gate in enumerate(policy.gates):
        where = f"policy.gates[{index}]"
        unknown = [env for env in gate.environments if env not in environments]
        if isinstance(gate, StagingFirstSettings) and gate.after not in environments:
            unknown.append(gate.after)
        if unknown:
            raise ConfigError(f"{where} names unknown environment(s) {', '.join(unknown)}",
                              hint="configured: " + ", ".join(sorted(environments)))
        scope = tuple(gate.environments)
        if isinstance(gate, MetricGateSettings):
            gates.append(MetricGate.parse(gate.check, scope))
        elif isinstance(gate, StagingFirstSettings):
            gates.append(StagingFirstGate(gate.after, gate.soak_seconds, scope))
        else:
            rule = CelRule.compile(gate.name, gate.expression, gate.message, sample_intent)
            gates.append(CelGate(rule, scope))
    _refuse_unknown_team_environments(policy, environments)
    if policy.teams:  # first: who may deploy where is the first thing a denial should say
        gates.insert(0, TeamPermissionGate({
            team: TeamAccess(_tuple(access.environments), _tuple(access.namespaces),
                             _tuple(access.models))
            for team, access in policy.teams.items()}))
    return tuple(gates)


def _refuse_unknown_team_environments(policy: PolicySettings,
                                      environments: Mapping[str, Any]) -> None:
    """ConfigError naming a team's ``environments`` or ``approvers`` entry for an environment
    that is not configured: a typo (``prodution``) would otherwise be accepted, and the
    restriction or the approval rule would silently never apply."""
    for team, access in sorted(policy.teams.items()):
        sections = {"environments": access.environments or [], "approvers": access.approvers}
        for section, named in sections.items():
            unknown = sorted(env for env in named if env not in environments)
            if unknown:
                raise ConfigError(
                    f"policy.teams.{team}.{section} names unknown environment(s) "
                    f"{', '.join(unknown)}",
                    hint="configured: " + ", ".join(sorted(environments)))


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None
