"""The GitOps repository's scaffolding, as files (pure: inputs in, ``{path: text}`` out).

What `promoter gitops init` writes next to ``manifests/``: the Argo CD ``AppProject`` objects
(one per team of ``policy.teams``: its namespaces, the kinds promoter renders; one shared
project when no teams are configured) and the ``ApplicationSet`` (one matrix per environment: its
overlays' kustomization files x the clusters its ``cluster_selector`` labels, narrowed to its
allowed regions; each Application in the project of the team its overlay names in the
``promoter.dev/team`` annotation), the Argo CD notifications
ConfigMap that calls promoter back, the admission policies that require promoter's signature
(Sigstore policy-controller and Kyverno, with the real public key(s) and image globs), a
``CODEOWNERS`` skeleton and the repository's own ``.gitlab-ci.yml`` gate (core.gitops_ci).

Every generated file holds one managed block between markers; ``merge_managed`` replaces only
that block, so text a person adds before or after it survives a re-run. Values reach YAML
through ``core.yamltext`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promoter.core.gitops_ci import gitops_ci
from promoter.core.tree_facts import TEAM
from promoter.core.yamltext import scalar, to_yaml_block
from promoter.errors import ConfigError

BEGIN = ">>> promoter gitops init: managed block (re-run `promoter gitops init` to update)"
END = "<<< promoter gitops init: end of managed block"
WEBHOOK_PATH = "/webhooks/argocd"
TOKEN_HEADER = "X-Promoter-Token"  # noqa: S105 - a header name
# The events promoter's notification templates report; each is one trigger + one template.
EVENTS: dict[str, str] = {
    "sync-succeeded": "app.status.operationState != nil and "
                      "app.status.operationState.phase in ['Succeeded']",
    "sync-failed": "app.status.operationState != nil and "
                   "app.status.operationState.phase in ['Error', 'Failed']",
    "health-degraded": "app.status.health.status == 'Degraded'",
    "health-healthy": "app.status.health.status == 'Healthy'",
    # Argo CD's catalog on-deleted: an Application being deleted (the ApplicationSet's
    # resources finalizer holds it while its resources are pruned, so the controller sees
    # it). promoter stops counting that cluster (core.cluster_status.DELETED).
    "deleted": "app.metadata.deletionTimestamp != nil",
}
# Once per deletion, as the catalog's on-deleted: every later change of the Application being
# deleted would match again.
_ONCE_PER = {"sync-succeeded": "app.status.operationState?.syncResult?.revision",
             "sync-failed": "app.status.operationState?.syncResult?.revision",
             "deleted": "app.metadata.name"}
# Kinds promoter renders (templates/, and the KEDA ScaledObject `promoter forecast` proposes)
# plus the Namespace CreateNamespace=true makes. tests/gitops keeps this in step with templates/.
NAMESPACED_KINDS = (("apps", "Deployment"), ("", "Service"),
                    ("autoscaling", "HorizontalPodAutoscaler"), ("policy", "PodDisruptionBudget"),
                    ("serving.kserve.io", "InferenceService"),
                    ("monitoring.coreos.com", "ServiceMonitor"), ("keda.sh", "ScaledObject"))
# A team becomes part of an AppProject name: a DNS label keeps it a valid object name.
_TEAM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The Application labels the ApplicationSet sets and promoter reads back.
MODEL_LABEL = "promoter.dev/model"
ENV_LABEL = "promoter.dev/environment"
# The cluster an Application runs on: an annotation, as a cluster's normalized name (an EKS
# ARN) can exceed a label value's 63 characters, and an invalid label fails the Application.
# Applications generated before carry it as a label, which is still read.
CLUSTER_ANNOTATION = CLUSTER_LABEL = "promoter.dev/cluster"
# policy-controller checks images only in namespaces labelled so (opt-in per namespace).
SIGSTORE_INCLUDE = "policy.sigstore.dev/include"


@dataclass(frozen=True)
class EnvironmentScaffold:
    name: str
    namespace: str
    cluster_selector: Mapping[str, str]
    regions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TeamScaffold:
    """One entry of policy.teams: None means "every environment" / "the environments' own
    namespaces", as the team-permission gate reads them."""
    name: str
    environments: tuple[str, ...] | None = None
    namespaces: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ScaffoldInputs:
    repo_url: str
    environments: tuple[EnvironmentScaffold, ...]
    image_globs: tuple[str, ...]
    public_keys: tuple[str, ...]               # PEM text of each verification key
    webhook_url: str
    target_branch: str = "main"
    manifests_dir: str = "manifests"
    argocd_namespace: str = "argocd"
    project: str = "models"
    region_label: str = "topology.kubernetes.io/region"
    ci_image: str = "python:3.11-bookworm"
    promoter_package: str = "promoter"
    codeowners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    teams: tuple[TeamScaffold, ...] = ()


def notification_body(event: str) -> str:
    """The JSON body Argo CD's webhook service posts (a Go template over ``.app``).

    Only plain field accesses and ``index`` on labels and the cluster annotation: every value
    is a Kubernetes name, label value, normalized cluster name, enum or timestamp, so the
    rendered text is valid JSON.

    The cluster is sent twice, the annotation (``cluster``) and the label (``clusterLabel``):
    Applications generated before the cluster became an annotation carry only the label, and
    the listing (core.cluster_status.from_application) reads it then; the receiver takes the
    first of the two that is set, so both paths key the cluster alike. Two fields, not one
    ``or`` in the template: ``index`` of a map the Application lacks is an error in Go's
    text/template ("index of untyped nil"), not an empty value, so guarding each map would
    take ``with`` blocks; ``index`` of a missing key prints ``<no value>``, which the receiver
    reads as unset. Both maps are there on every Application promoter's ApplicationSet makes:
    labels (model, environment) and annotations (the notification subscriptions)."""
    fields = {
        "event": event,
        "application": "{{.app.metadata.name}}",
        "model": f'{{{{index .app.metadata.labels "{MODEL_LABEL}"}}}}',
        "environment": f'{{{{index .app.metadata.labels "{ENV_LABEL}"}}}}',
        "cluster": f'{{{{index .app.metadata.annotations "{CLUSTER_ANNOTATION}"}}}}',
        "clusterLabel": f'{{{{index .app.metadata.labels "{CLUSTER_LABEL}"}}}}',
        "server": "{{.app.spec.destination.server}}",
        "sync": "{{.app.status.sync.status}}",
        "revision": "{{.app.status.sync.revision}}",
        "health": "{{.app.status.health.status}}",
        "reconciledAt": "{{.app.status.reconciledAt}}",
        "healthChangedAt": "{{.app.status.health.lastTransitionTime}}",
    }
    return "{" + ", ".join(f'"{key}": "{value}"' for key, value in fields.items()) + "}"


def render_scaffold(inputs: ScaffoldInputs) -> dict[str, str]:
    """Every scaffolding file, each text one managed block (see ``merge_managed``)."""
    files = {
        "argocd/kustomization.yaml": _yaml(_kustomization(
            ["appproject.yaml", "applicationset.yaml", "notifications.yaml"],
            inputs.argocd_namespace)),
        "argocd/appproject.yaml": "---\n".join(_yaml(project)
                                                for project in appprojects(inputs)),
        "argocd/applicationset.yaml": _yaml(_applicationset(inputs)),
        "argocd/notifications.yaml": _notifications(inputs),
        "policies/kustomization.yaml": _yaml(_kustomization(
            ["clusterimagepolicy.yaml", "kyverno-verify-images.yaml"], None)),
        "policies/clusterimagepolicy.yaml": _yaml(_clusterimagepolicy(inputs)),
        "policies/kyverno-verify-images.yaml": _yaml(_kyverno(inputs)),
        "CODEOWNERS": _codeowners(inputs),
        ".gitlab-ci.yml": _yaml(gitops_ci(inputs.manifests_dir, inputs.ci_image,
                                          inputs.promoter_package)),
    }
    return {path: _wrap(text) for path, text in files.items()}


def merge_managed(existing: str | None, generated: str) -> str | None:
    """``existing`` with its managed block replaced by ``generated``'s; None when ``existing``
    has no (or a broken) block, so the caller leaves a hand-written file alone."""
    if existing is None:
        return generated
    lines = existing.splitlines(keepends=True)
    begin = [i for i, line in enumerate(lines) if line.rstrip().endswith(BEGIN)]
    end = [i for i, line in enumerate(lines) if line.rstrip().endswith(END)]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        return None
    return "".join(lines[:begin[0]]) + generated + "".join(lines[end[0] + 1:])


def _wrap(text: str) -> str:
    return f"# {BEGIN}\n{text.rstrip()}\n# {END}\n"


def _yaml(document: Mapping[str, Any]) -> str:
    return str(to_yaml_block(document, 0)).lstrip("\n") + "\n"


def _kustomization(resources: list[str], namespace: str | None) -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                                "kind": "Kustomization"}
    if namespace:
        document["namespace"] = namespace
    document["resources"] = resources
    return document


def _namespaces(inputs: ScaffoldInputs) -> list[str]:
    return sorted({env.namespace for env in inputs.environments})


def project_name(inputs: ScaffoldInputs, team: str) -> str:
    """The AppProject of ``team``'s models: ``<argocd.project>-<team>``."""
    return f"{inputs.project}-{team}"


def team_namespaces(inputs: ScaffoldInputs, team: TeamScaffold) -> list[str]:
    """Where the team-permission gate lets ``team`` deploy: the namespace of each environment
    it may use, when that namespace is one of its own (or it has no namespace list)."""
    return sorted({env.namespace for env in inputs.environments
                   if (team.environments is None or env.name in team.environments)
                   and (team.namespaces is None or env.namespace in team.namespaces)})


def appprojects(inputs: ScaffoldInputs) -> list[dict[str, Any]]:
    """One AppProject per team (destinations: the team's namespaces), or the one shared
    project (every environment's namespace) when policy.teams is empty."""
    if not inputs.teams:
        return [_appproject(inputs, inputs.project, _namespaces(inputs),
                            "Models promoted from the MLflow registry by promoter")]
    projects = []
    for team in sorted(inputs.teams, key=lambda t: t.name):
        name = project_name(inputs, team.name)
        if not _TEAM_NAME.fullmatch(team.name) or len(name) > 63:
            raise ConfigError(f"team {team.name!r} cannot name an Argo CD AppProject "
                              f"({name!r})", hint="policy.teams keys: lowercase letters, "
                              "digits and '-', at most 63 characters with argocd.project")
        projects.append(_appproject(inputs, name, team_namespaces(inputs, team),
                                    f"Models of team {team.name}, promoted by promoter"))
    return projects


def _appproject(inputs: ScaffoldInputs, name: str, namespaces: list[str],
                description: str) -> dict[str, Any]:
    # Clusters are chosen by the ApplicationSet's label selectors; a project can only name
    # clusters by server or name, so it pins the namespaces and lets the selectors pick servers.
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": {"name": name, "namespace": inputs.argocd_namespace},
        "spec": {
            "description": description,
            "sourceRepos": [inputs.repo_url],
            "destinations": [{"server": "*", "namespace": ns} for ns in namespaces],
            # Argo CD's CreateNamespace=true is refused ("Namespace is not permitted in
            # project") without this, but it lets an overlay's own Namespace sync too, under
            # any name: the CI gate denies a Namespace in an overlay (core.declared_intent).
            "clusterResourceWhitelist": [{"group": "", "kind": "Namespace"}],
            "namespaceResourceWhitelist": [{"group": g, "kind": k} for g, k in NAMESPACED_KINDS],
            "orphanedResources": {"warn": True},
        },
    }


def _depth(path: str) -> int:
    return len([part for part in path.strip("/").split("/") if part])


def _applicationset(inputs: ScaffoldInputs) -> dict[str, Any]:
    name_segment = _depth(inputs.manifests_dir)      # manifests/<name>/overlays/<env>
    model = f"{{{{index .path.segments {name_segment}}}}}"
    generators = []
    for env in inputs.environments:
        selector: dict[str, Any] = {"matchLabels": dict(sorted(env.cluster_selector.items()))
                                    or {"gpu": "true", "env": env.name}}
        if env.regions:
            selector["matchExpressions"] = [{"key": inputs.region_label, "operator": "In",
                                             "values": list(env.regions)}]
        # The files generator reads each overlay's kustomization: with goTemplate its keys
        # (commonAnnotations -> promoter.dev/team) are parameters, and .path.path is its directory.
        generators.append({"matrix": {"generators": [
            {"git": {"repoURL": inputs.repo_url, "revision": inputs.target_branch,
                     "files": [{"path": f"{inputs.manifests_dir.strip('/')}/*/overlays/"
                                        f"{env.name}/kustomization.yaml"}]}},
            {"clusters": {"selector": selector,
                          "values": {"environment": env.name, "namespace": env.namespace}}},
        ]}})
    annotations = {f"notifications.argoproj.io/subscribe.promoter-{event}.promoter": ""
                   for event in EVENTS}
    # An overlay naming a team without a project names a project that does not exist: the
    # ApplicationSet controller does not create that Application (unknown teams fail closed).
    # promoter writes the team annotation into every overlay it renders; a hand-written overlay
    # without commonAnnotations stops the whole set's generation (missingkey=error).
    project = (project_name(inputs, f'{{{{index .commonAnnotations "{TEAM}"}}}}')
               if inputs.teams else inputs.project)
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
        "metadata": {"name": inputs.project, "namespace": inputs.argocd_namespace},
        "spec": {
            "goTemplate": True,
            "goTemplateOptions": ["missingkey=error"],
            "generators": generators,
            "template": {
                "metadata": {
                    # nameNormalized: the cluster's name made a valid Kubernetes name (Argo CD's
                    # SanitizeName); names like EKS ARNs, which `argocd cluster add` takes from
                    # kube contexts, hold ':' and '/'.
                    "name": f"{model}-{{{{.values.environment}}}}-{{{{.nameNormalized}}}}",
                    "labels": {MODEL_LABEL: model, ENV_LABEL: "{{.values.environment}}"},
                    "annotations": {**annotations, CLUSTER_ANNOTATION: "{{.nameNormalized}}"},
                },
                "spec": {
                    "project": project,
                    "source": {"repoURL": inputs.repo_url,
                               "targetRevision": inputs.target_branch,
                               "path": "{{.path.path}}"},
                    "destination": {"server": "{{.server}}",
                                    "namespace": "{{.values.namespace}}"},
                    "syncPolicy": {
                        "automated": {"prune": True, "selfHeal": True},
                        "syncOptions": ["CreateNamespace=true"],
                        # sigstore's policy-controller enforces only in namespaces carrying
                        # this label: on the namespaces Argo CD creates, set it there.
                        "managedNamespaceMetadata": {"labels": {SIGSTORE_INCLUDE: "true"}},
                        "retry": {"limit": 5, "backoff": {"duration": "30s", "factor": 2,
                                                          "maxDuration": "10m"}},
                    },
                },
            },
        },
    }


def _block_scalar(text: str, indent: int) -> str:
    pad = " " * indent
    return "|\n" + "".join(f"{pad}{line}\n" if line else "\n" for line in text.splitlines())


def _notifications(inputs: ScaffoldInputs) -> str:
    """argocd-notifications-cm: the promoter webhook service, one template + trigger per event.

    The shared secret is the key ``promoter-webhook-token`` of argocd-notifications-secret."""
    service = (f"url: {scalar(inputs.webhook_url)}\n"
               "headers:\n"
               "- name: Content-Type\n  value: application/json\n"
               f"- name: {TOKEN_HEADER}\n  value: $promoter-webhook-token\n")
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:",
             "  name: argocd-notifications-cm", f"  namespace: {scalar(inputs.argocd_namespace)}",
             "data:", f"  service.webhook.promoter: {_block_scalar(service, 4)}".rstrip("\n")]
    for event, condition in EVENTS.items():
        template = ("webhook:\n  promoter:\n    method: POST\n    body: |\n"
                    f"      {notification_body(event)}\n")
        # Sync results once per sync operation's revision, as Argo CD's own catalog does: the
        # repository's HEAD (status.sync.revision) moves with every model's commit, and would
        # re-send every Application's last result. Health: on every change of the condition.
        once = f"  oncePer: {_ONCE_PER[event]}\n" if event in _ONCE_PER else ""
        trigger = f"- when: {condition}\n{once}  send: [promoter-{event}]\n"
        lines.append(f"  template.promoter-{event}: {_block_scalar(template, 4)}".rstrip("\n"))
        lines.append(f"  trigger.promoter-{event}: {_block_scalar(trigger, 4)}".rstrip("\n"))
    return "\n".join(lines) + "\n"


def _clusterimagepolicy(inputs: ScaffoldInputs) -> dict[str, Any]:
    return {
        "apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy",
        "metadata": {"name": "promoter-signed-models"},
        "spec": {
            "mode": "enforce",
            "images": [{"glob": glob} for glob in inputs.image_globs],
            "authorities": [{"name": f"promoter-key-{index}",
                             "key": {"hashAlgorithm": "sha256", "data": key.strip() + "\n"}}
                            for index, key in enumerate(inputs.public_keys, start=1)],
        },
    }


def _kyverno(inputs: ScaffoldInputs) -> dict[str, Any]:
    return {
        "apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy",
        "metadata": {"name": "promoter-signed-models"},
        "spec": {
            "webhookTimeoutSeconds": 30,
            "rules": [{
                "name": "verify-promoter-signature",
                "match": {"any": [{"resources": {"kinds": ["Pod"],
                                                 "namespaces": _namespaces(inputs)}}]},
                "verifyImages": [{
                    "failureAction": "Enforce",
                    "imageReferences": list(inputs.image_globs),
                    "mutateDigest": True, "verifyDigest": True, "required": True,
                    "attestors": [{"count": 1, "entries": [
                        {"keys": {"publicKeys": key.strip() + "\n", "signatureAlgorithm": "sha256",
                                  # promoter signs with a key and no transparency log entry
                                  "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}}
                        for key in inputs.public_keys]}],
                }],
            }],
        },
    }


def _codeowners(inputs: ScaffoldInputs) -> str:
    lines = ["# Who reviews what. promoter opens the merge requests; these people approve them.",
             "# Add owners per model directory below the managed block."]
    for path, owners in sorted(inputs.codeowners.items()):
        lines.append(f"{path} {' '.join(owners)}".rstrip())
    if not inputs.codeowners:
        lines.append("# /argocd/ @platform-team")
        lines.append("# /policies/ @security-team")
    return "\n".join(lines) + "\n"
