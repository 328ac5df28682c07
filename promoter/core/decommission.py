"""The decommission use case: an environment's trigger no longer points at any version, so
one merge request removes its overlay (and its forecast plot, `promoter forecast --propose`'s
PNG beside the overlays), and the base too when no other environment remains: none has an
overlay on the target branch, and none is about to get one (core.base_reuse.wanted_elsewhere:
a first promotion into it proposes its overlay alone, on the base this MR would remove).

Not covered: a decommission MR removing the base that is already open when a first
promotion into another environment is proposed. The promotion withdraws only GC's MR
(base_reuse.withdraw_gc_removing_base); merging both leaves the new overlay without its base
until the next promotion of the model renders it again.

The version it removes comes from the ledger (MLflow's alias.deleted carries none), but the MR
and the write-back name the version the target branch actually runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promoter.core import base_reuse, closed_mr, gc, mr_text, tree_facts
from promoter.core.config import PipelineConfig
from promoter.core.results import DeploymentStatus, PipelineResult
from promoter.errors import UserError
from promoter.ports.git import Proposal
from promoter.ports.pipeline import DeployedState, Progress, StepLog

if TYPE_CHECKING:
    from promoter.core.pipeline import Ports, PromotionJob


def decommission(config: PipelineConfig, ports: Ports, job: PromotionJob, steps: StepLog,
                 progress: Progress) -> PipelineResult:
    """Remove the environment's overlay (and the base with the last one) through one MR."""
    registry, env = ports.registry, config.targets.environment(job.env)
    # A registered model deleted from MLflow points nowhere: its overlay (and base) go like
    # any other whose alias was deleted, not wait for `promoter gc` behind a parked job.
    current = base_reuse.pointed_at(registry, job.model, env)
    if current is not None:
        progress("resolve", "skipped", f"{job.env} points at version {current} again")
        return PipelineResult(None, reason=f"{job.env} points at version {current} again; "
                              "its promotion job deploys it")
    state = ports.ledger.get(job.model, job.env)
    if state is None:
        progress("resolve", "skipped", "promoter never deployed it there")
        return PipelineResult(
            None, reason=f"promoter has no deployment of {job.model!r} in {job.env}")
    root = config.manifests_root
    overlay = f"{root}/{state.name}/overlays/{job.env}/"
    # Every path, binary ones too (files() leaves out what is not UTF-8, such as a hand-made
    # overlay's kustomization saved as UTF-16): any other file under overlays/ keeps the
    # base, by GC's rule (a hand-made overlay too).
    overlays = ports.provider.paths(f"{root}/{state.name}/overlays/", config.target_branch)
    if overlays is None:
        raise UserError(f"the git remote has no branch {config.target_branch!r} "
                        "(git.target_branch) to remove the overlay from",
                        hint="set git.target_branch to the branch Argo CD syncs")
    keep_base = gc.overlays_left(root, state.name, overlays, (overlay,)) \
        or base_reuse.wanted_elsewhere(ports.ledger, registry, ports.provider,
                                       config.targets.environments, state.name, job.model,
                                       frozenset({job.env}))
    managed = (overlay,) if keep_base else (overlay, f"{root}/{state.name}/base/")
    what = "its overlay" if keep_base else "its overlay and base (no environment remains)"
    # What the environment runs is what the target branch holds, which may be older than the
    # last version promoter proposed (an MR for a newer version may never have merged).
    live = _live_version(config, ports, state.name, job.env) or state.version
    model = mr_text.escape(job.model, mr_text.TITLE_MODEL_LIMIT)
    # The environment's forecast plot describes scaling that goes with its overlay: it goes
    # too (a path mapped to None is deleted when it exists, and is no change when it does not).
    plot = tree_facts.forecast_plot(root, state.name, job.env)
    proposal = Proposal(
        model=job.model, name=state.name, env=job.env, version=live, files={plot: None},
        managed_prefixes=managed,
        title=f"Decommission {mr_text.inert_line(job.model, mr_text.TITLE_MODEL_LIMIT)} from "
              f"{job.env}",
        description=(f"## Decommission {model} from {job.env}\n\nThe {job.env} trigger no "
                     f"longer points at any version; {config.target_branch} runs "
                     f"version {live}. This removes {what}.\n"),
        labels=(*mr_text.labels(job.env, None), "decommission"),
        approvals_required=env.approvals, target_branch=config.target_branch)
    steps.before_side_effect("propose")  # only the job's current holder may propose
    result = ports.provider.propose(proposal)
    steps.before_side_effect("write-back")  # still ours after the push (see the pipeline)
    closed = closed_mr.closed_by(result, state, live,
                                 f"the removal of version {live} is proposed instead")
    closed_mr.write_back(registry, job.model, job.env, closed, progress)
    status = (DeploymentStatus.DECOMMISSIONING if result.merge_request
              else DeploymentStatus.DECOMMISSIONED)
    values = {"mr_url": result.mr_url} if result.mr_url else {}
    values["status"] = status
    closed_mr.write_back_if_present(registry, job.model, live, job.env, values, progress)
    ports.ledger.put(DeployedState(job.model, job.env, state.name, live,
                                        status, result.mr_iid, result.head_sha))
    progress("merge request", result.outcome.value, result.mr_url or "")
    return PipelineResult(result.outcome, status, version=live, name=state.name,
                          removes=managed, mr_iid=result.mr_iid, mr_url=result.mr_url,
                          head_sha=result.head_sha, commit_created=result.commit_created,
                          closed_mr=closed)

def _live_version(config: PipelineConfig, ports: Ports, name: str, env: str) -> str | None:
    """The version the target branch's overlay pins, or None when it has no overlay."""
    overlay = ports.provider.read(
        tree_facts.overlay_kustomization(config.manifests_root, name, env),
        config.target_branch)
    return tree_facts.annotation(overlay, tree_facts.MODEL_VERSION) if overlay else None
