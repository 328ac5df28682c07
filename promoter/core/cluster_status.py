"""Argo CD status, per cluster: from Application objects or notification bodies to rows, and
the "deployed" decision (pure).

An Application made by promoter's ApplicationSet carries the labels ``promoter.dev/model``
(the deployment name), ``promoter.dev/environment`` and ``promoter.dev/cluster``. Its
``status.sync.status`` (Synced/OutOfSync/Unknown), ``status.sync.revision``,
``status.health.status`` (Healthy/Progressing/Degraded/Suspended/Missing/Unknown) and the
time Argo CD last looked (``operationState.finishedAt``, else ``reconciledAt``) make one row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from promoter.core.gitops_scaffold import CLUSTER_LABEL, ENV_LABEL, MODEL_LABEL
from promoter.core.mr_text import escape
from promoter.errors import UserError

SYNCED = "Synced"
HEALTHY = "Healthy"
EVENTS = ("sync-succeeded", "sync-failed", "health-degraded", "health-healthy")
_NO_VALUE = "<no value>"  # what Go's text/template prints for a missing map entry
_MAX = 253
# Worst first: the environment-level value is the worst any of its clusters reports.
_SYNC_ORDER = ("Unknown", "OutOfSync", SYNCED)
_HEALTH_ORDER = ("Missing", "Degraded", "Unknown", "Suspended", "Progressing", HEALTHY)


@dataclass(frozen=True)
class ClusterStatus:
    name: str                 # deployment name (manifests/<name>/...)
    env: str
    cluster: str
    sync: str
    health: str
    revision: str | None
    since: str | None         # RFC 3339 time of the last sync or reconcile
    application: str

    @property
    def ready(self) -> bool:
        return self.sync == SYNCED and self.health == HEALTHY

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "env": self.env, "cluster": self.cluster, "sync": self.sync,
                "health": self.health, "revision": self.revision, "since": self.since,
                "application": self.application}


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value == _NO_VALUE:
        return None
    return value[:_MAX]


def from_application(application: Mapping[str, Any]) -> ClusterStatus | None:
    """One row from an Argo CD ``Application``; None when promoter's ApplicationSet did not
    make it (no promoter labels)."""
    labels = _get(application, "metadata", "labels") or {}
    name, env = _text(labels.get(MODEL_LABEL)), _text(labels.get(ENV_LABEL))
    if name is None or env is None:
        return None
    destination = _get(application, "spec", "destination") or {}
    cluster = (_text(labels.get(CLUSTER_LABEL)) or _text(destination.get("name"))
               or _text(destination.get("server")) or "unknown")
    return ClusterStatus(
        name=name, env=env, cluster=cluster,
        sync=_text(_get(application, "status", "sync", "status")) or "Unknown",
        health=_text(_get(application, "status", "health", "status")) or "Unknown",
        revision=_text(_get(application, "status", "sync", "revision")),
        since=(_text(_get(application, "status", "operationState", "finishedAt"))
               or _text(_get(application, "status", "reconciledAt"))),
        application=_text(_get(application, "metadata", "name")) or "unknown")


@dataclass(frozen=True)
class Notification:
    event: str
    status: ClusterStatus

    @property
    def dedupe_key(self) -> str:
        s = self.status
        return "\x1f".join([self.event, s.application, s.cluster, s.sync, s.health,
                            s.revision or "", s.since or ""])


def from_notification(body: Any) -> Notification:
    """A body rendered from promoter's notification template (core.gitops_scaffold)."""
    if not isinstance(body, Mapping):
        raise UserError("the body must be a JSON object")
    event = body.get("event")
    if event not in EVENTS:
        raise UserError(f"event must be one of {', '.join(EVENTS)}, got {str(event)[:40]!r}")
    name, env = _text(body.get("model")), _text(body.get("environment"))
    application = _text(body.get("application"))
    if name is None or env is None or application is None:
        raise UserError("model, environment and application are required (is the Application "
                        "labelled by promoter's ApplicationSet?)")
    cluster = _text(body.get("cluster")) or _text(body.get("server")) or "unknown"
    return Notification(event, ClusterStatus(
        name=name, env=env, cluster=cluster, sync=_text(body.get("sync")) or "Unknown",
        health=_text(body.get("health")) or "Unknown", revision=_text(body.get("revision")),
        since=_text(body.get("reconciledAt")), application=application))


def worst(values: Iterable[str], order: tuple[str, ...]) -> str:
    ranked = sorted(values, key=lambda v: order.index(v) if v in order else -1)
    return ranked[0] if ranked else "Unknown"


@dataclass(frozen=True)
class EnvironmentStatus:
    """One (deployment, environment) over every cluster it targets."""

    sync: str
    health: str
    revision: str | None      # the one revision every cluster is at, else None
    synced_at: str | None     # the latest time any cluster reported
    deployed: bool            # every targeted cluster Synced and Healthy at the revision
    clusters: tuple[ClusterStatus, ...]

    def tags(self) -> dict[str, str]:
        """MLflow write-back values (promoter.<env>.<field>)."""
        values = {"sync": self.sync, "health": self.health}
        if self.revision:
            values["revision"] = self.revision
        if self.synced_at:
            values["synced_at"] = self.synced_at
        if self.deployed:
            values["status"] = "deployed"
        return values

    def note(self) -> str:
        """The bot note on the merge request."""
        synced = [escape(c.cluster, 80) for c in self.clusters if c.sync == SYNCED]
        lines = [f"synced to {', '.join(synced)}" if synced else "not synced yet"]
        lines[0] += "; healthy" if self.deployed else f"; {escape(self.health.lower(), 40)}"
        for row in self.clusters:
            lines.append(f"- {escape(row.cluster, 80)}: {escape(row.sync, 40)}, "
                         f"{escape(row.health, 40)}, revision "
                         f"{escape((row.revision or 'unknown')[:12], 12)} since "
                         f"{escape(row.since or 'unknown', 40)}")
        return "\n".join(lines)


def summarise(rows: Iterable[ClusterStatus],
              accepted: frozenset[str] | None = None) -> EnvironmentStatus:
    """The environment's status over ``rows`` (one per targeted cluster). ``accepted``: the
    revisions that carry the merged change (its merge commit, the target branch's head), when
    known; then the clusters' one revision must be among them (an empty set: not merged)."""
    clusters = tuple(sorted(rows, key=lambda r: r.cluster))
    revisions = {row.revision for row in clusters}
    common = next(iter(revisions)) if len(revisions) == 1 else None
    at_revision = common is not None and (accepted is None or common in accepted)
    times = [row.since for row in clusters if row.since]
    return EnvironmentStatus(
        sync=worst((row.sync for row in clusters), _SYNC_ORDER),
        health=worst((row.health for row in clusters), _HEALTH_ORDER),
        revision=common, synced_at=max(times) if times else None,
        deployed=bool(clusters) and at_revision and all(row.ready for row in clusters),
        clusters=clusters)


def group(rows: Iterable[ClusterStatus]) -> dict[tuple[str, str], list[ClusterStatus]]:
    grouped: dict[tuple[str, str], list[ClusterStatus]] = {}
    for row in rows:
        grouped.setdefault((row.name, row.env), []).append(row)
    return grouped
