"""promoter.yaml → the scaffolding files (core.gitops_scaffold), written to a directory or
proposed as one merge request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from promoter.cluster_settings import repo_url_without_credentials
from promoter.core.gitops_scaffold import (
    EnvironmentScaffold,
    ScaffoldInputs,
    TeamScaffold,
    merge_managed,
    render_scaffold,
)
from promoter.errors import ConfigError
from promoter.ports.git import GitProvider, Proposal, ProposalResult
from promoter.settings import Settings

INIT_BRANCH = "promoter/gitops-init"
_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----\s+[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----")


@dataclass(frozen=True)
class Planned:
    files: dict[str, str]        # path → text to write
    skipped: list[str]           # hand-written files (no managed block) left alone
    unchanged: list[str]


def inputs_from_settings(settings: Settings) -> ScaffoldInputs:
    teams = settings.policy.teams
    codeowners = {}
    for env_name in settings.environments:
        owners = sorted({owner for team in teams.values()
                         for approvers in [team.approvers.get(env_name)] if approvers
                         for owner in approvers.codeowners})
        if owners:
            codeowners[f"/{settings.git.manifests_dir.strip('/')}/*/overlays/{env_name}/"] = \
                tuple(owners)
    return ScaffoldInputs(
        repo_url=repo_url(settings),
        environments=tuple(
            EnvironmentScaffold(name=name, namespace=env.namespace,
                                cluster_selector=dict(env.cluster_selector),
                                regions=tuple(env.allowed_regions) if env.allowed_regions
                                else None)
            for name, env in sorted(settings.environments.items())),
        image_globs=image_globs(settings), public_keys=public_keys(settings),
        webhook_url=settings.argocd.webhook_url, target_branch=settings.git.target_branch,
        manifests_dir=settings.git.manifests_dir.strip("/"),
        argocd_namespace=settings.argocd.namespace, project=settings.argocd.project,
        region_label=settings.argocd.region_label, ci_image=settings.argocd.ci_image,
        promoter_package=settings.argocd.promoter_package, codeowners=codeowners,
        teams=tuple(TeamScaffold(name,
                                 tuple(team.environments) if team.environments is not None
                                 else None,
                                 tuple(team.namespaces) if team.namespaces is not None else None)
                    for name, team in sorted(teams.items())))


def repo_url(settings: Settings) -> str:
    """The repository URL the Argo CD manifests name: argocd.repo_url (settings refuse
    credentials in it), else the GitLab project's or git.remote with any credentials taken
    out (``https://oauth2:TOKEN@host/…`` → ``https://host/…``): Argo CD reads them from its
    own repository Secret, and the manifests are committed to the GitOps repository."""
    if settings.argocd.repo_url:
        return settings.argocd.repo_url
    gitlab = settings.git.gitlab
    if settings.git.provider == "gitlab" and gitlab.url and gitlab.project:
        return repo_url_without_credentials(
            f"{gitlab.url.rstrip('/')}/{gitlab.project.strip('/')}.git")
    if settings.git.remote:
        return repo_url_without_credentials(settings.git.remote)
    return str(Path(settings.state_dir) / "gitops.git")


def image_globs(settings: Settings) -> tuple[str, ...]:
    """Where promoter pushes, as admission globs: image.repository and
    image.modelcar_repository (the modelcars KServe, vLLM and Triton pull), see repository_globs.
    """
    if settings.argocd.image_globs:
        return tuple(settings.argocd.image_globs)
    repositories = [r for r in (settings.image.repository, settings.image.modelcar_repository)
                    if r]
    if not repositories:
        raise ConfigError("the admission policies need the image repositories to guard",
                          hint="set image.repository (or argocd.image_globs)")
    return tuple(dict.fromkeys(glob for repository in repositories
                               for glob in repository_globs(repository)))


def repository_globs(repository: str) -> tuple[str, ...]:
    """Globs matching every image reference in ``repository`` (``{name}`` is one path segment).

    Admission matches a pod's whole reference, tag or digest included (policy-controller's
    ``repo@sha256:…``, ``repo:tag``; Kyverno's likewise), and policy-controller's ``*`` stops
    only at ``/``. So a repository ending in ``{name}`` needs nothing more (``models/*`` matches
    ``models/iris@sha256:…``); any other needs ``:**`` and ``@**``: a bare ``registry/models``
    would match no pod's image at all."""
    glob = repository.replace("{name}", "*")
    if glob.endswith("*"):
        return (glob,)
    return (f"{glob}:**", f"{glob}@**")


def public_keys(settings: Settings) -> tuple[str, ...]:
    """PEM text of image.verification_key and argocd.verification_keys, in that order."""
    paths = [p for p in [settings.image.verification_key, *settings.argocd.verification_keys]
             if p is not None]
    if not paths:
        raise ConfigError("the admission policies need promoter's public key",
                          hint="set image.verification_key to your cosign.pub "
                               "(`promoter keys generate --out cosign`)")
    keys = []
    for path in paths:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read public key {path}: {exc.strerror}") from None
        found = _PEM.search(text)
        if not found:
            raise ConfigError(f"{path} holds no PEM public key")
        if found.group() not in keys:
            keys.append(found.group())
    return tuple(keys)


def plan(settings: Settings, existing: Mapping[str, str | None]) -> Planned:
    """What to write, given the current text of each file (None: absent)."""
    files, skipped, unchanged = {}, [], []
    for path, generated in render_scaffold(inputs_from_settings(settings)).items():
        current = existing.get(path)
        merged = merge_managed(current, generated)
        if merged is None:
            skipped.append(path)
        elif merged == current:
            unchanged.append(path)
        else:
            files[path] = merged
    return Planned(files, skipped, unchanged)


def scaffold_paths(settings: Settings) -> list[str]:
    return sorted(render_scaffold(inputs_from_settings(settings)))


def write(settings: Settings, out: Path) -> Planned:
    existing = {}
    for path in scaffold_paths(settings):
        target = out / path
        existing[path] = target.read_text(encoding="utf-8") if target.exists() else None
    planned = plan(settings, existing)
    for path, text in planned.files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return planned


def propose(settings: Settings, provider: GitProvider) -> tuple[Planned, ProposalResult | None]:
    target = settings.git.target_branch
    existing = {path: provider.read(path, target) for path in scaffold_paths(settings)}
    planned = plan(settings, existing)
    if not planned.files:
        return planned, None
    listing = "\n".join(f"- `{path}`" for path in sorted(planned.files))
    result = provider.propose(Proposal(
        model="gitops scaffolding", name="gitops", env="init", version="1",
        files=dict(planned.files), managed_prefixes=(),
        title="GitOps scaffolding: Argo CD, admission policies, CI gate",
        description=("## GitOps scaffolding\n\nGenerated by `promoter gitops init` from "
                     f"promoter.yaml. Files inside the managed blocks:\n\n{listing}\n"),
        labels=("promoter", "gitops"), approvals_required=1, target_branch=target,
        branch_name=INIT_BRANCH))
    return planned, result

