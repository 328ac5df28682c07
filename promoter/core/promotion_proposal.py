"""A promotion's merge request: what it proposes (manifests, CODEOWNERS lines, the audit
anchor), what it needs before it merges (approvals and approvers of every environment a base
change reaches), and the MR text (core.mr_text). After proposing into an environment with no
overlay yet, an open GC MR removing the base the new overlay builds on is withdrawn; after
proposing into one that has, so is an open GC MR removing that overlay (core.base_reuse).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from promoter.core import audit_anchor, base_reuse, codeowners, lineage, mr_text, shared_base
from promoter.core.audit_chain import Head
from promoter.core.config import PipelineConfig
from promoter.core.policy import Decision
from promoter.core.spec import ModelDeployment
from promoter.ports.git import Proposal, ProposalResult
from promoter.ports.image import BuiltImage
from promoter.ports.pipeline import Progress
from promoter.ports.registry import ModelVersionInfo, RunInfo

if TYPE_CHECKING:
    from promoter.core.pipeline import Ports, PromotionJob


@dataclass(frozen=True)
class Reach:
    """How far a promotion reaches beyond its overlay (core.shared_base)."""

    shared: shared_base.SharedChange      # the base change and the other environments it hits
    tree: shared_base.DeploymentTree      # the base and overlays on the target branch


@dataclass(frozen=True)
class _Review:
    approvals: int
    auto_merge: bool
    user_ids: tuple[int, ...]
    group_ids: tuple[int, ...]


class PromotionProposal:
    def __init__(self, config: PipelineConfig, ports: Ports, progress: Progress) -> None:
        self.config = config
        self.ports = ports
        self.progress = progress

    def propose(self, job: PromotionJob, deployment: ModelDeployment, info: ModelVersionInfo,
                origin: lineage.RunOfVersion, files: Mapping[str, str], decision: Decision,
                image: BuiltImage | None, signature: str | None,
                reach: Reach) -> ProposalResult:
        run = origin.run
        root = self.config.manifests_root
        name = deployment.name
        team = deployment.spec.owner.team
        review = self._review(job.env, team, reach.shared.environments)
        facts = mr_text.MrFacts(
            model=job.model, version=info.version, env=job.env, name=name,
            team=deployment.spec.owner.team, run_id=run.run_id if run else None,
            run_url=self._run_url(run), run_doubt=origin.doubt,
            metrics=dict(run.metrics) if run else {}, params=dict(run.params) if run else {},
            image_ref=image.reference if image else None,
            image_digest=image.digest if image else None, signature=signature or "unsigned",
            policy=[mr_text.PolicyResult(r.rule, r.passed, r.detail) for r in decision.results],
            approvals_required=review.approvals, auto_merge=review.auto_merge,
            affected_envs=reach.shared.environments,
            shared_base_paths=[f"{root}/{path}" for path in reach.shared.paths])
        committed: dict[str, str | None] = {f"{root}/{path}": text
                                             for path, text in files.items()}
        owners = self._codeowners(team, job.env, name, reach.tree.overlays)
        if owners is not None:
            committed[codeowners.PATH] = owners
        proposal = Proposal(
            model=job.model, name=name, env=job.env, version=info.version,
            files=committed,
            managed_prefixes=(f"{root}/{name}/base/", f"{root}/{name}/overlays/{job.env}/"),
            title=mr_text.title(facts), description=mr_text.description(facts),
            labels=mr_text.labels(job.env, team, reach.shared.environments),
            approvals_required=review.approvals, auto_merge=review.auto_merge,
            target_branch=self.config.target_branch,
            approver_user_ids=review.user_ids, approver_group_ids=review.group_ids,
            riders=self._anchor(job, name, info.version), repropose=job.repropose)
        result = self.ports.provider.propose(proposal)
        self.progress("merge request", result.outcome.value, result.mr_url or "")
        if reach.tree.base and job.env not in reach.tree.overlays:   # builds on this base
            base_reuse.withdraw_gc_removing_base(self.ports.provider, root, name,
                                                 reach.tree.base, model=job.model, env=job.env)
        elif job.env in reach.tree.overlays:    # keeps (or updates) the overlay it runs
            base_reuse.withdraw_gc_removing_overlay(self.ports.provider, root, name,
                                                    model=job.model, env=job.env)
        return result

    def _review(self, env: str, team: str, affected: Collection[str]) -> _Review:
        """What the MR needs before it merges. A change of the shared base is a change of every
        environment it reaches: the approvals of the strictest of them and its approvers
        (policy.teams.<team>.approvers.<env>; on a tie, those of each tied environment), so
        a staging promotion that changes production needs production's reviewers; auto-merge
        only if each of them allows it. An
        overlay of an environment no longer configured allows no auto-merge."""
        configured = self.config.targets.environments
        targets = [self.config.targets.environment(env)] + \
            [configured[other] for other in affected if other in configured]
        approvals = max(target.approvals for target in targets)
        strictest = [target.name for target in targets if target.approvals == approvals]
        approvers = [self.config.policy.approvers.get((team, where), ((), ()))
                     for where in strictest]
        return _Review(
            approvals=approvals,
            auto_merge=all(target.auto_merge for target in targets)
            and all(other in configured for other in affected),
            user_ids=tuple(dict.fromkeys(i for users, _ in approvers for i in users)),
            group_ids=tuple(dict.fromkeys(i for _, groups in approvers for i in groups)))

    def _codeowners(self, team: str, env: str, name: str,
                    overlays: Collection[str]) -> str | None:
        """CODEOWNERS of the target branch with this model directory's lines set to the team's
        approvers (core.codeowners), or None: no file and no owners, or a block left alone.
        ``overlays``: the environments whose overlays build on the base on the target branch."""
        owners = self.config.policy.codeowners.get(team, {})
        entries = codeowners.model_entries(self.config.manifests_root, name, env, owners,
                                           overlays)
        current = self.ports.provider.read(codeowners.PATH, self.config.target_branch)
        updated = codeowners.upsert(current, entries)
        if updated is None and current is not None:
            self.progress("codeowners", "skipped", f"{codeowners.PATH} has a broken promoter "
                          "block (one marker without the other); left as it is")
        return updated

    def _anchor(self, job: PromotionJob, name: str, version: str) -> dict[str, str]:
        """The audit trail's head, committed with the manifests (core.audit_anchor)."""
        recorded = self.ports.audit.recorded_head() if self.ports.audit else None
        if recorded is None:
            return {}
        clock = self.ports.clock
        return {audit_anchor.anchor_path(name, job.env): audit_anchor.anchor_text(
            Head(recorded.seq, recorded.hash), model=job.model, env=job.env, version=version,
            time=clock.now() if clock else None)}

    def _run_url(self, run: RunInfo | None) -> str | None:
        base = self.config.run_link_base
        if not base or run is None:
            return None
        return f"{base.rstrip('/')}/#/runs/{run.run_id}"
