"""promoter.yaml + environment variables → validated, frozen Settings.

The file path comes from ``--config`` or ``PROMOTER_CONFIG``; without one the embedded defaults
apply (environments ``staging`` and ``production`` triggered by the aliases of the same names).
Secrets are read only from environment variables or from files they name (``<VAR>_FILE``);
a secret written into promoter.yaml is refused, so it cannot end up in git by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote_plus, urlsplit

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from promoter.cluster_settings import (
    ArgoCDSettings,
    ForecastSettings,
    PrometheusSettings,
    TelemetrySettings,
    refuse_url_credentials,
)
from promoter.core.config import (
    COST_LABEL_ROLES,
    DEFAULT_COST_LABELS,
    OWN_LABEL_PREFIXES,
    PipelineConfig,
    Targets,
    unknown_environment,
)
from promoter.core.gates import Gate
from promoter.core.image_refs import is_pinned
from promoter.core.masking import credential_param
from promoter.core.naming import label_problem, label_value_problem
from promoter.core.problems import describe
from promoter.core.spec import MIG_PROFILE_PATTERN, deep_merge
from promoter.core.uri_scope import root_problem
from promoter.errors import ConfigError
from promoter.image_settings import ImageSettings
from promoter.policy_settings import PolicySettings
from promoter.secret_settings import Secret, read_secrets, refuse_inline_secrets
from promoter.server_settings import ServerSettings
from promoter.settings_file import default_problems, read_yaml
from promoter.settings_section import Section as _Section
from promoter.state_settings import StateSettings, refuse_url_password


class Trigger(_Section):
    alias: str | None = None
    stage: Literal["Staging", "Production"] | None = None

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        if not self.alias and not self.stage:
            raise ValueError("name an MLflow alias, a legacy stage, or both")
        return self


class Replicas(_Section):
    # ge=1 as the intent's minReplicas: a 0 here would make every intent of the environment
    # invalid at its first promotion instead of failing the configuration at start.
    min: int = Field(default=1, ge=1, le=1000)
    max: int = Field(default=2, ge=1, le=1000)


class Environment(_Section):
    trigger: Trigger
    namespace: str
    cluster_selector: dict[str, str] = Field(default_factory=dict)
    replicas: Replicas | None = None
    approvals: int = Field(default=1, ge=0, le=20)
    allowed_gpu_types: list[str] | None = None
    allowed_regions: list[str] | None = None
    auto_merge: bool = False
    mig_profiles: list[str] | None = Field(
        default=None, description="MIG profiles its GPU nodes offer, e.g. 1g.10gb; none: any")
    priority_class_name: str | None = Field(default=None,
                                            description="PriorityClass of its model pods")
    zone_spread: Literal["ScheduleAnyway", "DoNotSchedule"] | None = Field(
        default="ScheduleAnyway", description="spread replicas over zones; null: off")

    @field_validator("mig_profiles")
    @classmethod
    def _mig(cls, value: list[str] | None) -> list[str] | None:
        for profile in value or []:
            if not re.fullmatch(MIG_PROFILE_PATTERN, profile):
                raise ValueError(f"MIG profile {profile!r} is not <g>g.<memory>gb (e.g. 1g.10gb)")
        return value

    @field_validator("priority_class_name")
    @classmethod
    def _priority(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or
                                  not re.fullmatch(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", value)):
            raise ValueError(f"{value!r} is not a PriorityClass name (a DNS subdomain)")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        problem = label_problem(value)
        if problem:
            raise ValueError(f"namespace {value!r} {problem}")
        return value

    @field_validator("cluster_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            problem = label_value_problem(label)
            if problem:
                raise ValueError(f"label {key}={label!r} {problem}")
        return value

    def spec_defaults(self) -> dict[str, Any]:
        """This environment's defaults, in intent shape, for spec.resolve()."""
        if self.replicas is None:
            return {}
        return {"scaling": {"minReplicas": self.replicas.min, "maxReplicas": self.replicas.max}}


class MlflowSettings(_Section):
    tracking_uri: str | None = None
    ui_url: str | None = Field(default=None, description="base URL for links in MR text")
    artifact_roots: tuple[Annotated[str, Field(min_length=3, max_length=500)], ...] | None = \
        Field(default=None, description="roots model files may be read from (e.g. "
              "mlflow-artifacts:, s3://ml-artifacts/team-a), by whole segments; unset: anywhere")

    @field_validator("artifact_roots")
    @classmethod
    def _roots_hold_something(cls, roots: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # A root the check cannot parse would hold nothing: say so now, not at every promotion.
        for root in roots or ():
            if (problem := root_problem(root)) is not None:
                raise ValueError(f"artifact root {root!r} {problem}")
        return roots


class GitLabSettings(_Section):
    url: str | None = None
    project: str | None = None
    verify_tls: bool = True
    ca_file: str | None = Field(default=None, description="CA bundle for a private GitLab CA")
    timeout_seconds: float = Field(default=30, gt=0)
    max_retry_wait_seconds: float = Field(
        default=60, ge=0, description="longest Retry-After honoured in-line; longer → job retry")


class GitSettings(_Section):
    provider: Literal["local", "gitlab"] = "local"
    remote: str | None = Field(default=None, description="local provider: git remote URL/path")
    target_branch: str = "main"
    manifests_dir: str = "manifests"
    newer_version: Literal["update", "supersede"] = Field(
        default="update", description="a newer version updates the open MR or supersedes it")
    gitlab: GitLabSettings = GitLabSettings()


class GcSettings(_Section):
    staging_ttl_seconds: float | None = Field(
        default=None, gt=0, description="collect deployments idle this long in idle_environments")
    idle_environments: list[str] = Field(default_factory=lambda: ["staging"])


def _default_environments() -> dict[str, Environment]:
    return {
        "staging": Environment(trigger=Trigger(alias="staging", stage="Staging"),
                               namespace="models-staging", approvals=1),
        "production": Environment(trigger=Trigger(alias="production", stage="Production"),
                                  namespace="models-production", approvals=2),
    }


DEFAULT_SPEC: dict[str, Any] = {
    "runtime": "kserve",
    "resources": {"cpu": "1", "memory": "2Gi", "gpu": {"count": 0}},
    "scaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "cpu", "target": 70},
}


class Settings(_Section):
    """Everything promoter.yaml can say, after environment overrides; secrets kept apart."""

    state_dir: Path = Field(default_factory=lambda: Path("~/.local/state/promoter").expanduser())
    state: StateSettings = StateSettings()
    templates_dir: Path | None = Field(default=None, description="override the built-in templates")
    defaults: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC))
    environments: dict[str, Environment] = Field(default_factory=_default_environments)
    mlflow: MlflowSettings = MlflowSettings()
    image: ImageSettings = ImageSettings()
    git: GitSettings = GitSettings()
    server: ServerSettings = ServerSettings()
    policy: PolicySettings = PolicySettings()
    gc: GcSettings = GcSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    forecast: ForecastSettings = ForecastSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    cost_labels: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_COST_LABELS),
        description="label key per cost role (team, cost_center, environment, model, runtime)")
    runtime_images: dict[str, str] = Field(
        default_factory=dict,
        description="server image per runtime, pinned by digest (REPO@sha256:…), replacing "
                    "the tag its runtime.yaml names")
    argocd: ArgoCDSettings = ArgoCDSettings()
    secrets: dict[str, Secret] = Field(default_factory=dict, exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @field_validator("state_dir", "templates_dir")
    @classmethod
    def _home_expanded(cls, value: Path | None) -> Path | None:
        # A "~" in promoter.yaml, or in PROMOTER_STATE_DIR set where no shell expands it
        # (systemd Environment=, a Kubernetes env value), is the home directory: expanded once
        # here, every path built from the setting agrees (some opened the directory through
        # ensure_state_dir, which expands, and others joined the raw "~/…" to the cwd).
        return value.expanduser() if value is not None else None

    @field_validator("environments")
    @classmethod
    def _env_names(cls, value: dict[str, Environment]) -> dict[str, Environment]:
        for name in value:
            problem = label_problem(name)
            if problem:
                raise ValueError(f"environment name {name!r} {problem}")
        if not value:
            raise ValueError("declare at least one environment")
        return value

    @field_validator("cost_labels")
    @classmethod
    def _cost_labels(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(COST_LABEL_ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles: "
                             f"{', '.join(COST_LABEL_ROLES)}")
        for role, key in value.items():
            if key and not re.fullmatch(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}"
                                    r"[A-Za-z0-9])?$", key):
                raise ValueError(f"{role}: {key!r} is not a Kubernetes label key")
            if key.startswith(OWN_LABEL_PREFIXES):
                # promoter sets these itself, some as the workload's selector: a cost label
                # written over one makes the pod template disagree with its selector.
                raise ValueError(f"{role}: {key!r} is one of promoter's own labels "
                                 f"({', '.join(p + '*' for p in OWN_LABEL_PREFIXES)})")
        merged = {**DEFAULT_COST_LABELS, **value}
        keys = [key for key in merged.values() if key]
        shared = sorted({key for key in keys if keys.count(key) > 1})
        if shared:
            raise ValueError(f"{', '.join(shared)} is the key of more than one role; each "
                             "role needs its own (one value would overwrite the other)")
        return merged

    @field_validator("runtime_images")
    @classmethod
    def _runtime_images(cls, value: dict[str, str]) -> dict[str, str]:
        for runtime, reference in value.items():
            if not is_pinned(reference):
                raise ValueError(f"{runtime}: {reference!r} is not pinned by digest "
                                 "(REPOSITORY@sha256:<64 hex digits>)")
        return value

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            raise unknown_environment(name, self.environments) from None

    def secret(self, name: str) -> Secret | None:
        return self.secrets.get(name)

    def secret_values(self) -> list[str]:
        """What logs must never show: the secrets, a password written into an MLflow URI
        (``https://user:password@host``, which MLflow's client accepts), the credential
        in git.remote's userinfo (``https://oauth2:TOKEN@host`` or ``https://TOKEN@host``),
        and prometheus.url's (its userinfo's, or a ``?token=``-like parameter's value)."""
        values = [secret.reveal() for secret in self.secrets.values()]
        for uri in (self.mlflow.tracking_uri, self.mlflow.ui_url):
            password = urlsplit(uri).password if uri else None
            if password:
                values.append(password)
        values += _userinfo_credential(self.git.remote)
        for url in (self.prometheus.url, self.prometheus.cluster_url):
            values += _userinfo_credential(url)
            values += _credential_params(url)
        return [value for value in values if value]

    def targets(self) -> Targets:
        """The environments and defaults as the core's frozen value (settings_core)."""
        from promoter.settings_core import targets

        return targets(self)

    def gates(self) -> tuple[Gate, ...]:
        """policy.gates and policy.teams compiled for the core (ConfigError when one is bad)."""
        from promoter.settings_core import gates

        return gates(self)

    def pipeline_config(self) -> PipelineConfig:
        """What the promotion pipeline reads, and nothing else (no secrets, no paths)."""
        from promoter.settings_core import pipeline_config

        return pipeline_config(self)


def _userinfo_credential(url: str | None) -> list[str]:
    """The credential in ``url``'s userinfo: the password, else a lone user name (a token, as
    in ``https://TOKEN@host``)."""
    try:
        parts = urlsplit(url) if url else None
    except ValueError:   # not a URL a client can use either; nothing to hide in it
        return []
    if parts is None or parts.username is None:
        return []
    return [parts.password if parts.password is not None else parts.username]


def _credential_params(url: str | None) -> list[str]:
    """The values of ``url``'s query parameters whose name says they are credentials, as
    written and percent-decoded."""
    try:
        query = urlsplit(url).query if url else ""
    except ValueError:
        return []
    values: list[str] = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if credential_param(unquote_plus(name)):
            values += dict.fromkeys([value, unquote_plus(value)])
    return values


# Environment variables that override keys of promoter.yaml (documented in the README).
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
    "PROMOTER_STATE_DIR": ("state_dir",),
    "PROMOTER_STATE_URL": ("state", "url"),
    "PROMOTER_GITLAB_URL": ("git", "gitlab", "url"),
    "PROMOTER_GITLAB_PROJECT": ("git", "gitlab", "project"),
    "PROMOTER_GIT_REMOTE": ("git", "remote"),
    "PROMOTER_IMAGE_REPOSITORY": ("image", "repository"),
    "PROMOTER_PROMETHEUS_URL": ("prometheus", "url"),
}
def load_settings(config: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read promoter.yaml (``config`` or ``$PROMOTER_CONFIG``; none → defaults) and the env."""
    environ = os.environ if environ is None else environ
    path = config or (Path(environ["PROMOTER_CONFIG"]) if environ.get("PROMOTER_CONFIG") else None)
    raw = read_yaml(path) if path else {}
    refuse_inline_secrets(raw, path)
    for variable, keys in ENV_OVERRIDES.items():
        if environ.get(variable):
            raw = deep_merge(raw, _nest(keys, environ[variable]))
    if environ.get("PROMOTER_GITLAB_URL") and "provider" not in (raw.get("git") or {}):
        raw = deep_merge(raw, {"git": {"provider": "gitlab"}})
    refuse_url_password(raw)
    refuse_url_credentials(raw)
    raw = _with_default_spec(raw)
    problems = default_problems(raw.get("defaults"))
    try:
        settings = Settings.model_validate({**raw, "secrets": read_secrets(environ)})
    except ValidationError as exc:
        problems = describe(exc) + problems
    if problems:
        where = str(path) if path else "settings"
        raise ConfigError(f"{where} is not valid:\n  " + "\n  ".join(problems),
                          hint="fix every field listed; see the README's configuration reference")
    try:
        settings.gates()  # compiled now so a bad gate stops promoter at start
    except ConfigError as exc:
        where = str(path) if path else "settings"
        raise ConfigError(f"{where} is not valid:\n  {exc.message}", hint=exc.hint) from None
    return settings


def _nest(keys: tuple[str, ...], value: str) -> dict[str, Any]:
    nested: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        nested = {key: nested}
    return nested


def _with_default_spec(raw: dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw.get("defaults"), Mapping):
        return {**raw, "defaults": deep_merge(DEFAULT_SPEC, raw["defaults"])}
    return raw
