"""Argo CD status, per cluster: from Application objects or notification bodies to rows, and
the "deployed" decision (pure).

An Application made by promoter's ApplicationSet carries the labels ``promoter.dev/model``
(the deployment name), ``promoter.dev/environment`` and ``promoter.dev/cluster``. Its
``status.sync.status`` (Synced/OutOfSync/Unknown), ``status.sync.revision``,
``status.health.status`` (Healthy/Progressing/Degraded/Suspended/Missing/Unknown) and the
time Argo CD last looked (``status.reconciledAt``) make one row.

"Deployed" asks whether every cluster's revision *contains* the merged change, not whether the
clusters agree on one revision: ``status.sync.revision`` is the repository's HEAD when Argo CD
compared, and every other model's merge moves it, so two clusters that synced minutes apart
report different revisions that both carry the change. Whether a revision contains a commit is
a git question; the caller answers it (``Carries``, backed by the git provider).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from promoter.core.documents import dig
from promoter.core.gitops_scaffold import (
    CLUSTER_ANNOTATION,
    CLUSTER_LABEL,
    ENV_LABEL,
    MODEL_LABEL,
)
from promoter.core.mr_text import escape
from promoter.core.naming import DISPLAY_CONTROLS
from promoter.core.results import DEPLOYED
from promoter.errors import UserError

SYNCED = "Synced"
HEALTHY = "Healthy"
# An Application being deleted (its cluster lost the label, the model was removed): its row
# is marked deleted, so a cluster that no longer runs the environment stops counting for it.
DELETED = "deleted"
EVENTS = ("sync-succeeded", "sync-failed", "health-degraded", "health-healthy", DELETED)
_NO_VALUE = "<no value>"  # what Go's text/template prints for a missing map entry
_MAX = 253
# Worst first: the environment-level value is the worst any of its clusters reports.
_SYNC_ORDER = ("Unknown", "OutOfSync", SYNCED)
_HEALTH_ORDER = ("Missing", "Degraded", "Unknown", "Suspended", "Progressing", HEALTHY)

# The years (UTC) an observation time may be in. Rows are ordered by their time and a stored
# row is replaced only by a later one, so one implausible time would rule its cluster for good:
# far in the future, no later report is ever taken; far in the past, it is no order at all.
# Argo CD did not exist before 2018; 2000 leaves room for any clock set back. 2199 is far past
# any real reconciledAt and still rejects a year-9999 placeholder (or a 2500 typo) that would
# block every later report. Outside them the time is no time (a notification is refused).
PLAUSIBLE_YEARS = range(2000, 2200)

# "Does this revision contain the merged change?" (the change's commit is the revision or one
# of its ancestors). Answered by the git provider; the core cannot run git.
Carries = Callable[[str], bool]


@dataclass(frozen=True)
class ClusterStatus:
    name: str                 # deployment name (manifests/<name>/...)
    env: str
    cluster: str
    sync: str
    health: str
    revision: str | None
    since: str | None         # when Argo CD made this observation (observed_at), UTC
    application: str
    # When the health last changed (status.health.lastTransitionTime), UTC: orders two
    # observations with one reconciledAt, which Argo CD bumps only when it compares with git,
    # not when a resource event changes the health. None: not sent (older template or Argo CD).
    health_changed_at: str | None = None

    @property
    def ready(self) -> bool:
        return self.sync == SYNCED and self.health == HEALTHY

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "env": self.env, "cluster": self.cluster, "sync": self.sync,
                "health": self.health, "revision": self.revision, "since": self.since,
                "application": self.application}


_TEXT_FIELDS = ("event", "model", "environment", "application", "cluster", "clusterLabel",
                "server", "sync", "health", "revision", "reconciledAt", "healthChangedAt")


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value == _NO_VALUE:
        return None
    return value[:_MAX]


def observed_at(value: Any) -> str | None:
    """The one definition of when a row was observed, for both paths: the Application's
    ``status.reconciledAt`` (the notification template sends that very field). Argo CD sets it
    each time it compares the cluster with git, which is when sync and health are computed;
    ``operationState.finishedAt`` is only when the last sync operation ended, and mixing the
    two would order a notification and a listing by different clocks.

    Normalised to UTC, whole seconds (Kubernetes' ``metav1.Time`` precision), ``...Z``, so the
    state database can order observations by comparing the text. None when absent or not a
    time (Go templates print ``<no value>`` for a missing field), or outside ``PLAUSIBLE_YEARS``
    in UTC."""
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:   # Kubernetes always writes a zone; a bare time is not its
            return None
        # Near datetime's limits the conversion overflows (0001-01-01T00:00+01:00).
        utc = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if utc.year not in PLAUSIBLE_YEARS:
        return None
    # Not strftime('%Y'): glibc does not zero-pad years before 1000. Four digits always, or
    # the text order the state database relies on is not time order.
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
            f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z")


def from_application(application: Mapping[str, Any]) -> ClusterStatus | None:
    """One row from an Argo CD ``Application``; None when promoter's ApplicationSet did not
    make it (no promoter labels)."""
    labels = dig(application, "metadata", "labels") or {}
    name, env = _text(labels.get(MODEL_LABEL)), _text(labels.get(ENV_LABEL))
    if name is None or env is None:
        return None
    destination = dig(application, "spec", "destination") or {}
    annotations = dig(application, "metadata", "annotations") or {}
    cluster = (_text(annotations.get(CLUSTER_ANNOTATION)) or _text(labels.get(CLUSTER_LABEL))
               or _text(destination.get("name")) or _text(destination.get("server"))
               or "unknown")
    return ClusterStatus(
        name=name, env=env, cluster=cluster,
        sync=_text(dig(application, "status", "sync", "status")) or "Unknown",
        health=_text(dig(application, "status", "health", "status")) or "Unknown",
        revision=_text(dig(application, "status", "sync", "revision")),
        since=observed_at(dig(application, "status", "reconciledAt")),
        application=_text(dig(application, "metadata", "name")) or "unknown",
        health_changed_at=observed_at(dig(application, "status", "health",
                                          "lastTransitionTime")))


def being_deleted(application: Mapping[str, Any]) -> bool:
    """Whether the Application is being deleted (``metadata.deletionTimestamp`` set): the
    ApplicationSet's resources finalizer holds it while Argo CD prunes, and Argo CD keeps
    reconciling it meanwhile, so it is listed (and watched) with newer reconciledAt than the
    ``deleted`` notification had. Its cluster no longer runs the environment: a row of it is
    a deletion (``deleted``), not a cluster to count (the trigger of that notification,
    core.gitops_scaffold.EVENTS, is this same test)."""
    return dig(application, "metadata", "deletionTimestamp") is not None


@dataclass(frozen=True)
class Notification:
    event: str
    status: ClusterStatus

    @property
    def dedupe_key(self) -> str:
        s = self.status
        # The health's change time too: Healthy, Degraded, Healthy again within one
        # reconciledAt are three reports, and the third is not a re-delivery of the first.
        # Without it (Argo CD often sends none) the third has the first's key: the hook then
        # tells them apart by the cluster's stored row (promoter.service.argocd_hook).
        return "\x1f".join([self.event, s.application, s.cluster, s.sync, s.health,
                            s.revision or "", s.since or "", s.health_changed_at or ""])


def from_notification(body: Any) -> Notification:
    """A body rendered from promoter's notification template (core.gitops_scaffold)."""
    if not isinstance(body, Mapping):
        raise UserError("the body must be a JSON object")
    for field in _TEXT_FIELDS:
        value = body.get(field)
        if isinstance(value, str) and DISPLAY_CONTROLS.search(value):
            # A NUL cannot be stored (PostgreSQL), and controls would reach MR notes and tags.
            raise UserError(f"{field} holds control characters")
    event = body.get("event")
    if event not in EVENTS:
        raise UserError(f"event must be one of {', '.join(EVENTS)}, got {str(event)[:40]!r}")
    name, env = _text(body.get("model")), _text(body.get("environment"))
    application = _text(body.get("application"))
    if name is None or env is None or application is None:
        raise UserError("model, environment and application are required (is the Application "
                        "labelled by promoter's ApplicationSet?)")
    # As from_application: the annotation, else the label (Applications generated before the
    # annotation; bodies of templates before clusterLabel lack it), else the server.
    cluster = (_text(body.get("cluster")) or _text(body.get("clusterLabel"))
               or _text(body.get("server")) or "unknown")
    since = observed_at(body.get("reconciledAt"))
    if since is None and _text(body.get("reconciledAt")) is not None:
        raise UserError(f"reconciledAt must be an RFC 3339 time with a zone, in the years "
                        f"{PLAUSIBLE_YEARS[0]}-{PLAUSIBLE_YEARS[-1]} (UTC), got "
                        f"{str(body.get('reconciledAt'))[:40]!r} (is the notification template "
                        "promoter's, from `promoter gitops init`?)")
    return Notification(event, ClusterStatus(
        name=name, env=env, cluster=cluster, sync=_text(body.get("sync")) or "Unknown",
        health=_text(body.get("health")) or "Unknown", revision=_text(body.get("revision")),
        since=since, application=application,
        # Absent from bodies of templates before it was added: then unordered (ties, see
        # promoter.service.cluster_status_store).
        health_changed_at=observed_at(body.get("healthChangedAt"))))


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
    deployed: bool            # every cluster Synced and Healthy at a revision with the change
    clusters: tuple[ClusterStatus, ...]
    # The version's MR was merged with a head promoter did not write (merged_unverified): what
    # the clusters run is not what promoter checked, so the version is never deployed.
    unverified: bool = False

    def tags(self) -> dict[str, str]:
        """MLflow write-back values (promoter.<env>.<field>)."""
        values = {"sync": self.sync, "health": self.health}
        if self.revision:
            values["revision"] = self.revision
        if self.synced_at:
            values["synced_at"] = self.synced_at
        if self.deployed:
            values["status"] = DEPLOYED
        return values

    def note(self, version: str | None = None) -> str:
        """The bot note on the merge request (``version``: the one it proposed)."""
        synced = [escape(c.cluster, 80) for c in self.clusters if c.sync == SYNCED]
        lines = [f"synced to {', '.join(synced)}" if synced else "not synced yet"]
        lines[0] += "; healthy" if self.deployed else f"; {escape(self.health.lower(), 40)}"
        for row in self.clusters:
            lines.append(f"- {escape(row.cluster, 80)}: {escape(row.sync, 40)}, "
                         f"{escape(row.health, 40)}, revision "
                         f"{escape((row.revision or 'unknown')[:12], 12)} since "
                         f"{escape(row.since or 'unknown', 40)}")
        if self.unverified:
            subject = f"version {escape(version, 80)}" if version else "this version"
            lines.append(f"\n{subject} is not marked deployed: its merge request was merged "
                         "with a head promoter did not write (status merged_unverified)")
        return "\n".join(lines)


def summarise(rows: Iterable[ClusterStatus], carries: Carries | None = None, *,
              unverified: bool = False) -> EnvironmentStatus:
    """The environment's status over ``rows`` (one per targeted cluster). ``carries``: whether
    a revision contains the merged change (a caller that cannot name the change's commit
    passes one that answers False: agreeing clusters may all run the previous version). None
    only without any git provider: then the clusters must at least agree on one revision.
    ``unverified``: the change was merged with a head promoter did not write, so it is never
    deployed."""
    clusters = tuple(sorted(rows, key=lambda r: r.cluster))
    revisions = {row.revision for row in clusters}
    common = next(iter(revisions)) if len(revisions) == 1 else None
    if carries is None:
        at_change = common is not None
    else:
        at_change = all(row.revision is not None and carries(row.revision)
                        for row in clusters)
    times = [row.since for row in clusters if row.since]
    return EnvironmentStatus(
        sync=worst((row.sync for row in clusters), _SYNC_ORDER),
        health=worst((row.health for row in clusters), _HEALTH_ORDER),
        revision=common, synced_at=max(times) if times else None,
        deployed=not unverified and bool(clusters) and at_change and
        all(row.ready for row in clusters),
        clusters=clusters, unverified=unverified)


def group(rows: Iterable[ClusterStatus]) -> dict[tuple[str, str], list[ClusterStatus]]:
    grouped: dict[tuple[str, str], list[ClusterStatus]] = {}
    for row in rows:
        grouped.setdefault((row.name, row.env), []).append(row)
    return grouped
