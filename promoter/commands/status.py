"""`promoter status`: what Argo CD reports for each model, environment and cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promoter.commands._common import OUTPUT_OPTION, emit_json, state

if TYPE_CHECKING:
    from promoter.core.cluster_status import Carries, ClusterStatus
    from promoter.core.live_history import Live
    from promoter.ports.pipeline import DeployedState, DeploymentLedger
    from promoter.service.cluster_feedback import ClusterFeedback

# --for bounds a watch; a number beyond a year is a typo, refused as a usage error.
SECONDS_PER_YEAR = 365 * 24 * 3600

HELP = """Show Argo CD's sync and health of promoted models, one row per model, environment and
cluster (the version the cluster runs, and a newer one proposed in an MR not merged yet; MR,
sync, health, since), read from the Argo CD Application objects through
the Kubernetes API (argocd.kubeconfig / KUBECONFIG / in-cluster; namespace argocd.namespace).

A merged version is shown for a cluster only once its synced revision contains the merge:
before, `- (v7 merged, not confirmed here)` (JSON "version": null, "merged": "7").

MODEL is a registered model name or a deployment name. Unless --no-record, a change is also
written back as the notifications webhook does: MLflow tags promoter.<env>.sync, .health,
.revision, .synced_at (and status=deployed once the merge is recorded and every cluster is
Synced and Healthy at a revision containing the MR's merge commit), the MR note and the audit
trail. --watch keeps following changes (Ctrl-C stops;
--for N stops after N seconds).
"""


def status(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="registered model or deployment name")]
    = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="only this environment")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="follow changes")] = False,
    seconds: Annotated[int | None, typer.Option("--for", min=1, max=SECONDS_PER_YEAR,
                                                help="with --watch: stop after N seconds")]
    = None,
    record: Annotated[bool, typer.Option("--record/--no-record",
                                         help="write changes back (MLflow, MR note, audit)")]
    = True,
    output: str = OUTPUT_OPTION,
) -> None:
    from promoter.core.cluster_status import being_deleted, from_application, group
    from promoter.core.gitops_scaffold import ENV_LABEL, MODEL_LABEL
    from promoter.ports.clusters import WatchExpired
    from promoter.service import composition

    if seconds is not None and not watch:
        from promoter.errors import UsageError

        raise UsageError("--for N bounds --watch; give --watch too")
    settings = state(ctx).settings()
    if env is not None:
        settings.environment(env)  # ConfigError naming the known ones
    applications = composition.argocd_applications(settings)
    registry = composition.registry(settings) if record and settings.mlflow.tracking_uri \
        else None
    feedback = composition.cluster_feedback(settings, registry) if record else None
    ledger: DeploymentLedger = feedback.ledger if feedback else _ledger(settings)
    labels: dict[str, str | None] = {MODEL_LABEL: None}
    if env is not None:
        labels[ENV_LABEL] = env

    def wanted(name: str, env_name: str) -> bool:
        """Whether (deployment, environment) is within the listing's scope (MODEL, --env)."""
        if env is not None and env_name != env:
            return False
        if model is None or name == model:
            return True
        deployed = ledger.by_deployment(name, env_name)
        return deployed is not None and deployed.model == model

    def snapshot() -> tuple[dict[tuple[str, str, str], ClusterStatus], str | None]:
        items, version = applications.list(labels)
        rows: dict[tuple[str, str, str], ClusterStatus] = {}
        # Applications being deleted are listed until their finalizer lets go; counted, they
        # would undo the deleted notification (and keep `deployed` from the environment).
        deleting: list[ClusterStatus] = []
        for item in items:
            row = from_application(item)
            if row is None or not wanted(row.name, row.env):
                continue
            if being_deleted(item):
                deleting.append(row)
            else:
                rows[(row.name, row.env, row.cluster)] = row
        running, going = group(rows.values()), group(deleting)
        listed = running.keys() | going.keys()
        # The listing is complete: an environment with rows stored and no Application listed
        # has none left (deleted with no finalizer, or with no deleted notification), and its
        # rows would be told again to every later version (after_merge). Only within the
        # listing's scope: an environment or model it did not ask for is not seen gone.
        stored = feedback.store.environments() if feedback is not None else []
        empty = {pair for pair in stored if pair not in listed and wanted(*pair)}
        if empty and not items and (env is None or not applications.list({MODEL_LABEL: None})[0]):
            # Nothing at all listed is also what a wrong argocd.namespace (or a cluster Argo
            # CD does not run on) answers: clearing would tell MLflow and the audit trail
            # that every model left its clusters. Kept; the deleted notifications clear them.
            # (With --env the listing asks for one environment: whether the namespace holds
            # any of promoter's Applications is asked without it.)
            typer.echo(f"warning: no Argo CD Application in namespace "
                       f"{settings.argocd.namespace!r} carries {MODEL_LABEL}: the stored "
                       f"status of {len(empty)} environment(s) is kept (is argocd.namespace "
                       f"right?)", err=True)
            empty = set()
        for name, env_name in sorted(listed | empty):
            _record(feedback, name, env_name, running.get((name, env_name), []),
                    deleted=going.get((name, env_name), []))
        return rows, version

    current, version = snapshot()
    live = _live_versions(settings)
    confirmed = _confirmation(settings, feedback)
    # --watch -o json: one object per line from the start, as each change is printed.
    _print([_describe(row, ledger, live, confirmed) for _, row in sorted(current.items())],
           output, header=not (watch and output == "json"))
    if not watch:
        return
    deadline = time.monotonic() + seconds if seconds else None
    while deadline is None or time.monotonic() < deadline:
        left = int(deadline - time.monotonic()) + 1 if deadline else 300
        try:
            for kind, obj in applications.watch(labels, version, left):
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                row = from_application(obj)
                if row is None or not wanted(row.name, row.env):
                    continue
                key = (row.name, row.env, row.cluster)
                # Gone (DELETED: with no finalizer there was no deleted notification) or
                # going: a deletion mark, as the notification leaves, not just no row, so
                # Argo CD's late retry of a report from before cannot bring the cluster back.
                deleting = kind == "DELETED" or being_deleted(obj)
                if deleting:
                    current.pop(key, None)
                else:
                    current[key] = row
                _record(feedback, row.name, row.env,
                        [r for k, r in current.items() if k[:2] == key[:2]],
                        deleted=[row] if deleting else [])
                gone = {"deleted": True} if deleting else {}
                _print([_describe(row, ledger, live, confirmed) | gone], output, header=False)
                if deadline is not None and time.monotonic() >= deadline:
                    return
        except WatchExpired:  # the resourceVersion is too old: list again, watch from there
            current, version = snapshot()


def _ledger(settings: Any) -> DeploymentLedger:
    from promoter.service import composition
    from promoter.service.ledger import StateLedger

    return StateLedger(composition.state_db(settings))


def _record(feedback: ClusterFeedback | None, name: str, env: str,
            rows: list[ClusterStatus], *, deleted: list[ClusterStatus] | None = None) -> None:
    """Write back what the listing saw of (name, env): ``rows``, every cluster it runs on;
    ``deleted``, Applications being deleted, whose clusters are marked so (as the deleted
    notification does), so a late report from before cannot count them again."""
    if feedback is None:
        return
    from promoter.errors import PromoterError

    try:
        feedback.observe(name, env, rows, complete=True, actor="promoter status",
                         deleted=deleted or [])
    except PromoterError as exc:
        typer.echo(f"warning: {name}/{env}: status not written back: {exc.message}", err=True)


def _describe(row: ClusterStatus, ledger: DeploymentLedger,
              live: Callable[[str, str], Live | None],
              confirmed: Callable[[DeployedState, str | None], bool]) -> dict[str, Any]:
    """One row: ``version`` is what the cluster runs (the ledger row's once merged, else the
    version still live, each only when the cluster's revision contains the merge that made
    it live), ``merged`` a merged version the cluster's revision does not contain (``version``
    then None: it may still run the one before), ``proposed`` a newer version whose MR
    (``mr``) is open."""
    from promoter.core.results import OPEN_MR, RUNNING_ROW, DeploymentStatus
    from promoter.ports.pipeline import DeployedState

    deployed = ledger.by_deployment(row.name, row.env)
    merge = deployed
    if deployed is not None and deployed.status not in RUNNING_ROW:
        # A newer proposal (or a closed one) follows: the version live is an earlier merge's.
        found = live(deployed.model, row.env)
        merge = None if found is None or found.version is None else DeployedState(
            model=deployed.model, env=row.env, name=row.name, version=found.version,
            status=DeploymentStatus.MERGED, mr_iid=found.merged_iid,
            head_sha=found.merged_head)
    unconfirmed = merge is not None and not confirmed(merge, row.revision)
    return {"model": deployed.model if deployed else row.name, "name": row.name,
            "env": row.env, "cluster": row.cluster,
            "version": merge.version if merge is not None and not unconfirmed else None,
            "merged": merge.version if merge is not None and unconfirmed else None,
            "proposed": deployed.version if deployed and deployed.status in OPEN_MR
            else None,
            "mr": deployed.mr_iid if deployed else None, "sync": row.sync,
            "health": row.health, "revision": row.revision, "since": row.since,
            "application": row.application}


def _confirmation(settings: Any, feedback: ClusterFeedback | None,
                  ) -> Callable[[DeployedState, str | None], bool]:
    """(ledger row, a cluster's revision) → whether that revision contains the merge that
    made the row's version live (service.change_carriers, as the feedback judges `deployed`):
    a cluster that has not synced the merge may still run the version before. Asked only of a
    merged row (a decommissioning row's MR is the removal, not the merge); the git provider
    is built on the first question, and each answer kept for the run."""
    from promoter.core.results import DeploymentStatus
    from promoter.errors import PromoterError
    from promoter.service import composition
    from promoter.service.change_carriers import ChangeCarriers, change_carriers

    merges = (DeploymentStatus.MERGED, DeploymentStatus.MERGED_UNVERIFIED)
    asked: dict[tuple[int | None, str | None], Carries | None] = {}

    views: list[tuple[Any, Any]] = []   # (merge requests, forge): built once
    warned: list[str] = []

    def git_view() -> tuple[Any, Any]:
        if not views:
            if feedback is not None:
                views.append((feedback.merge_requests, feedback.forge))
            else:
                git = composition.provider(settings)
                views.append((git, getattr(git, "forge", None)))  # both providers expose theirs
        return views[0]

    def confirmed(deployed: DeployedState, revision: str | None) -> bool:
        if deployed.status not in merges:
            return True
        try:
            key = (deployed.mr_iid, deployed.head_sha)
            if key not in asked:
                asked[key] = change_carriers(deployed, *git_view())
            carries = asked[key]
            if carries is None:
                return True   # no git provider to ask: shown as the ledger says, as before
            if revision is None:
                return False
            if isinstance(carries, ChangeCarriers):
                carries.learn([revision])
            return carries(revision)
        except PromoterError as exc:
            # The git provider cannot be asked (remote or GitLab unreachable): the listing
            # still shows, claiming no merged version it could not check.
            if not warned:
                warned.append(exc.message)
                typer.echo(f"warning: cannot tell which clusters' revisions contain a merge: "
                           f"{exc.message}; merged versions are shown not confirmed", err=True)
            return False

    return confirmed


def _live_versions(settings: Any) -> Callable[[str, str], Live | None]:
    """(model, env) → what is live there (its version and the merge that made it live), from
    the audit trail: read once per environment, and only when a row follows a proposal not
    merged yet."""
    from promoter.service import composition

    read: dict[str, dict[str, Live]] = {}

    def live(model: str, env: str) -> Live | None:
        if env not in read:
            read[env] = composition.audit_trail(settings).live_now(env)
        return read[env].get(model)

    return live


def _print(rows: list[dict[str, Any]], output: str, header: bool = True) -> None:
    if output == "json":
        if header:
            emit_json(rows)
        else:  # --watch: one JSON object per line
            import json

            for row in rows:
                typer.echo(json.dumps(row, sort_keys=True))
        return
    if header and not rows:
        typer.echo("no Argo CD applications of promoted models found")
        return
    table = [("MODEL", "ENV", "CLUSTER", "VERSION", "MR", "SYNC", "HEALTH", "SINCE")] \
        if header else []
    table += [(str(r["model"]), r["env"], r["cluster"],
               str(r["version"] or "-")
               + (f" (v{r['merged']} merged, not confirmed here)" if r["merged"] else "")
               + (f" (v{r['proposed']} proposed)" if r["proposed"] else ""),
               f"!{r['mr']}" if r["mr"] else "-", r["sync"], r["health"],
               str(r["since"] or "-")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for line in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(status)
