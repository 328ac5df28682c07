"""Whether a deployment can be deployed at all, beside the policy verdict (core.verdict): the
checks the pipeline makes on a promotion before it builds or proposes anything. Ports only.

The pipeline and ``promoter policy check`` both call these functions with facts from the same
adapters (the git provider's target branch, the state database's ledger, the registry), so
`policy check` gives the pipeline's answer and the two cannot drift. Before the verdict,
the deployment name must not belong to another registered model, the shared base must not
switch runtime under other environments' overlays, and vLLM must be able to start the version
as the intent asks (its config.json, read from the registry). Each refusal is an InvalidIntent
(the version's status ``invalid``; exit 1).

What the intent alone decides (its shape, the environment's MIG profiles, the runtime's
requirements, a pyfunc image without ``image.base``) is core.intent.build_request's, given the
renderer's runtime descriptors in the targets; what rendering refuses (a KServe host name too
long) is Renderer.check's. Both callers ask those too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from promoter.core import shared_base, tree_facts, vllm_fit
from promoter.core.config import PipelineConfig
from promoter.core.intent import InvalidIntent
from promoter.core.runtimes import RuntimeDescriptor
from promoter.core.spec import ModelDeployment
from promoter.ports.git import BranchReader
from promoter.ports.registry import Registry


class NameOwners(Protocol):
    """What the checks read of the ledger (a DeploymentLedger is one)."""

    def owners(self, name: str) -> frozenset[str]: ...


@dataclass(frozen=True)
class Candidate:
    """A deployment about to be promoted: of registered model ``model`` (its ``version`` in the
    registry; None for an intent file checked on its own) into ``env``."""

    model: str
    version: str | None
    env: str
    deployment: ModelDeployment


def refuse_undeployable(config: PipelineConfig, candidate: Candidate, *, provider: BranchReader,
                        ledger: NameOwners, registry: Registry | None,
                        runtimes: Mapping[str, RuntimeDescriptor],
                        ) -> shared_base.DeploymentTree:
    """InvalidIntent for the first check ``candidate`` fails; else the deployment's files on
    the target branch (read once; the pipeline goes on with them). The vLLM check reads the
    version's config.json, so it needs ``registry`` and a version."""
    tree = deployment_tree(config, provider, candidate.deployment.name)
    refuse_undeployable_on(tree, candidate, ledger=ledger, registry=registry, runtimes=runtimes)
    return tree


def refuse_undeployable_on(tree: shared_base.DeploymentTree, candidate: Candidate, *,
                           ledger: NameOwners, registry: Registry | None,
                           runtimes: Mapping[str, RuntimeDescriptor]) -> None:
    """refuse_undeployable with the target branch's files already read (``tree``). `policy
    check` passes an empty tree when it cannot read the branch (offline, no GitLab token):
    the ledger's owners and the vLLM fit are still checked, and it says what was not."""
    deployment, name = candidate.deployment, candidate.deployment.name
    refuse_shared_name(candidate.model, name, name_owners(candidate.model, name, tree, ledger))
    shared_base.refuse_runtime_switch(name, candidate.env, deployment.spec.runtime, tree)
    if registry is not None and candidate.version is not None:
        # What vLLM would refuse at start-up is an invalid intent now, not a crash-looping pod
        # after the merge; read from the registry, so a reused modelcar is checked too.
        vllm_fit.refuse_misfit(registry, deployment, runtimes.get(deployment.spec.runtime),
                               candidate.model, candidate.version, candidate.env)


def deployment_tree(config: PipelineConfig, provider: BranchReader,
                    name: str) -> shared_base.DeploymentTree:
    """The deployment's base and overlays on the target branch, in one read."""
    root = config.manifests_root
    return shared_base.deployment_tree(provider.files(f"{root}/{name}/", config.target_branch),
                                       root, name)


def name_owners(model: str, name: str, tree: shared_base.DeploymentTree,
                ledger: NameOwners) -> set[str]:
    """The models other than ``model`` that own deployment ``name``: a name belongs to one
    registered model in every environment, since two sharing it would share ``<name>/base/``
    (promoting one to staging would rewrite what the other runs in production). The ledger
    knows what promoter deployed or claimed; the target branch's base annotation knows what
    was merged (also by an earlier state directory)."""
    owners = set(ledger.owners(name)) - {model}
    base = tree.base.get(f"{name}/base/kustomization.yaml")
    if base is not None:
        merged_owner = tree_facts.base_owner(base)
        if merged_owner != model:
            owners.add(merged_owner or tree_facts.FOREIGN_DIRECTORY)
    return owners


def refuse_shared_name(model: str, name: str, owners: Collection[str]) -> None:
    """InvalidIntent when ``owners`` (models other than ``model``) own deployment ``name``."""
    if owners:
        other = ", ".join(repr(owner) for owner in sorted(owners))
        raise InvalidIntent(f"models {other} and {model!r} both become deployment "
                            f"{name!r}; set metadata.name (tag deploy.name) on one of them")
