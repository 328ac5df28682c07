"""promoter's Argo CD Applications, derived from Argo CD's own test objects (tests/data/argocd,
provenance in tests/data/PROVENANCE.md): only what the ApplicationSet sets and the status
values under test are changed."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from ruamel.yaml import YAML

from promoter.core import gitops_scaffold
from tests.conftest import ROOT
from tests.gitops import gotemplate

DATA = ROOT / "tests/data/argocd"
REVISION = "ea8759964626a583667a2bfd08f334ec2070040a"   # a revision in Argo CD's test object


@cache
def _upstream(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load((DATA / name).read_text())
    return loaded


def application(name: str, env: str, cluster: str, *, sync: str = "Synced",
                health: str = "Healthy", revision: str = REVISION,
                reconciled_at: str = "2024-03-05T07:33:04Z",
                health_changed_at: str | None = None) -> dict[str, Any]:
    app = copy.deepcopy(_upstream("application-synced-healthy.yaml"))
    metadata = app["metadata"]
    metadata["name"] = f"{name}-{env}-{cluster}"
    metadata["labels"] = {gitops_scaffold.MODEL_LABEL: name, gitops_scaffold.ENV_LABEL: env}
    metadata.setdefault("annotations", {})[gitops_scaffold.CLUSTER_ANNOTATION] = cluster
    app["spec"]["destination"] = {"server": f"https://{cluster}.clusters.internal",
                                  "namespace": f"models-{env}"}
    app["spec"]["source"]["path"] = f"manifests/{name}/overlays/{env}"
    status = app["status"]
    status["sync"]["status"] = sync
    status["sync"]["revision"] = revision
    status["health"] = copy.deepcopy(_upstream("application-degraded.yaml")["status"]["health"]
                                      if health == "Degraded" else {"status": health})
    if health_changed_at is not None:   # Argo CD's status.health.lastTransitionTime (CRD)
        status["health"]["lastTransitionTime"] = health_changed_at
    status["reconciledAt"] = reconciled_at
    status["operationState"]["finishedAt"] = reconciled_at
    return app


def notification(event: str, app: dict[str, Any]) -> bytes:
    """The body Argo CD's notifications controller posts: promoter's shipped template,
    rendered over the Application with Go template semantics."""
    return gotemplate.render(gitops_scaffold.notification_body(event), {"app": app}).encode()
