"""The promoter.yaml sections for what promoter reads from and writes to the clusters: Argo CD
(scaffolding, status) and Prometheus telemetry (forecasts, right-sizing, cost)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from promoter.core.masking import without_url_credentials
from promoter.errors import ConfigError
from promoter.settings_section import Section as _Section

# The userinfo of an http(s) URL is a credential, user:password@ or a lone token@ (up to the
# last "@" before the path, as clients split a password holding one).
_HTTP_USERINFO = re.compile(r"^(https?://)[^/?#]*@", re.IGNORECASE)
# Another scheme's userinfo may name the login (ssh://git@host/…, which Argo CD needs), but a
# password in it is a credential.
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#:@]*):[^/?#]*@")


def repo_url_without_credentials(url: str) -> str:
    """``url`` as it may go into the manifests Argo CD reads (its own repository Secret holds
    the credentials): an http(s) URL without userinfo, another without a password in it."""
    return _USERINFO_PASSWORD.sub(r"\1@", _HTTP_USERINFO.sub(r"\1", url))


class ArgoCDSettings(_Section):
    repo_url: str | None = Field(
        default=None, description="GitOps repository URL Argo CD clones, without credentials "
                                  "(Argo CD's repository Secret holds them); default: the "
                                  "GitLab project's HTTPS URL, else git.remote without them")
    namespace: str = Field(default="argocd", description="where Argo CD runs")
    project: str = Field(default="models", description="the AppProject of promoted models")
    webhook_url: str = Field(
        default="http://promoter.promoter.svc:8080/webhooks/argocd",
        description="where Argo CD notifications reach `promoter serve`")
    region_label: str = Field(default="topology.kubernetes.io/region",
                              description="cluster label matched against allowed_regions")
    image_globs: list[str] = Field(
        default_factory=list, description="admission-policy globs; default from image.repository")
    verification_keys: list[Path] = Field(
        default_factory=list, description="extra cosign.pub files the admission policies trust")
    ci_image: str = Field(default="python:3.11-bookworm",
                          description="image of the GitOps repository's CI gate")
    promoter_package: str = Field(default="promoter",
                                  description="pip requirement the CI gate installs")
    kubeconfig: Path | None = Field(default=None, description="for `promoter status`; default: "
                                    "$KUBECONFIG, ~/.kube/config, then in-cluster")
    context: str | None = Field(default=None, description="kubeconfig context")
    status_timeout_seconds: float = Field(default=10, gt=0)


class PrometheusSettings(_Section):
    url: str | None = Field(default=None, description="Prometheus HTTP API base URL, for "
                            "forecast, rightsize and cost; KEDA's prometheus trigger uses it too")
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    cluster_url: str | None = Field(
        default=None, description="Prometheus as KEDA reaches it inside the cluster (the "
        "prometheus trigger's serverAddress, committed to the GitOps repository, so without "
        "credentials); default: url")

    @field_validator("url", "cluster_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"^https?://[^\s]+$", value):
            # Not quoted: core.problems shows the value, a password in it masked.
            raise ValueError("must be an http(s) URL")
        return value


def refuse_url_credentials(raw: Mapping[str, Any]) -> None:
    """A URL promoter writes into manifests committed to the GitOps repository must carry no
    credentials: refuse userinfo or a ``?token=``-like parameter in one (before validation,
    whose messages quote the value)."""
    argocd = raw.get("argocd")
    repo = argocd.get("repo_url") if isinstance(argocd, Mapping) else None
    if isinstance(repo, str) and repo_url_without_credentials(repo) != repo:
        raise ConfigError(
            "argocd.repo_url must not carry credentials (user:token@): it goes into the "
            "AppProject and ApplicationSet committed to the GitOps repository",
            hint="give the repository URL without them; Argo CD reads the repository's "
                 "credentials from its own repository Secret")
    prometheus = raw.get("prometheus")
    url = prometheus.get("cluster_url") if isinstance(prometheus, Mapping) else None
    if isinstance(url, str) and without_url_credentials(url) != url:
        raise ConfigError(
            "prometheus.cluster_url must not carry credentials (user:password@ or a token "
            "parameter): it is the serverAddress of the KEDA ScaledObject committed to the "
            "GitOps repository",
            hint="give Prometheus' in-cluster address without credentials; KEDA authenticates "
                 "through a TriggerAuthentication that references a Secret")


class ForecastSettings(_Section):
    timezone: str = Field(default="UTC", description="IANA zone of the cron windows, e.g. "
                          "Europe/Berlin")
    lead_time_seconds: int | None = Field(
        default=None, ge=0, le=6 * 3600, description="cold-start lead time; default: measured "
        "(pod created -> Ready), else the runtime's telemetry.startupSeconds")
    history_days: int = Field(default=21, ge=7, le=90)
    step_minutes: int = Field(default=15, ge=1, le=60, description="a divisor of 60")
    requests_per_replica: float = Field(
        default=10, gt=0, description="requests/s one replica serves, unless the intent scales "
        "on rps (then its scaling.target)")
    queue_per_replica: float = Field(default=4, gt=0,
                                     description="waiting requests per replica before scaling")
    quantile_z: float = Field(default=1.28, ge=0, le=4,
                              description="upper band = forecast x (1 + z x spread)")

    @field_validator("step_minutes")
    @classmethod
    def _whole_buckets_per_hour(cls, value: int) -> int:
        # The hourly plan takes each hour's buckets; a step such as 45 puts buckets across
        # hour boundaries, so demand at 01:30 would be pre-warmed only from 02:00.
        if 60 % value:
            raise ValueError(f"must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60), "
                             f"not {value}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return value


class TelemetrySettings(_Section):
    gpu_hour_prices: dict[str, float] = Field(
        default_factory=dict, description="price of one GPU-hour per GPU type (the intent's "
        "resources.gpu.type); 'default' for any other type")
    currency: str = "USD"
