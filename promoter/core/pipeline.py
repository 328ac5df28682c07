"""The promotion use case: one job, from a registry event to a merge request. Ports only.

A job deploys what the environment's alias (or legacy stage) points at *when the job runs*, not
what its event carried, so stale, duplicated or out-of-order events converge on the registry's
current state and moving an alias back is honoured as a rollback. Every step is safe to re-run:
expensive results (image, signature) are recorded under the job and reused for the same
version; everything else asks the system of record first (the provider compares the branch
with the target tree, the signer finds existing signatures), so a crash at any point finishes
on the next attempt without duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from promoter.core import (
    closed_mr,
    deployable,
    gates,
    lineage,
    live_overlay,
    shared_base,
)
from promoter.core.artifact_steps import ArtifactSteps
from promoter.core.config import PipelineConfig
from promoter.core.decommission import decommission
from promoter.core.intent import InvalidIntent, build_request
from promoter.core.jobs import PROPOSAL_STARTED
from promoter.core.policy import Decision
from promoter.core.promotion_proposal import PromotionProposal, Reach
from promoter.core.render import ImagePin, Lineage, Renderer
from promoter.core.results import (
    DEPLOYED,
    STATUS_FOR_OUTCOME,
    DeploymentStatus,
    PipelineResult,
)
from promoter.core.spec import API_VERSION, KIND, ModelDeployment, ModelRef
from promoter.core.verdict import OPEN_PROPOSALS, claimed_elsewhere, verdict
from promoter.errors import (
    Disposition,
    PolicyDenied,
    PromoterError,
    UserError,
    disposition_of,
)
from promoter.ports.clock import Clock
from promoter.ports.git import GitProvider, Outcome, ProposalResult
from promoter.ports.image import Signer, Verifier
from promoter.ports.pipeline import (
    AuditHeads,
    DeployedState,
    DeploymentHistory,
    DeploymentLedger,
    ModelImages,
    Progress,
    StepLog,
)
from promoter.ports.registry import ModelVersionInfo, Registry


def digest_of(value: Any) -> str:
    """sha256 of a JSON value's canonical form: what the audit trail says a step consumed."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PromotionJob:
    model: str
    env: str
    action: str                      # promote | decommission
    requested_version: str | None = None
    # A person asked for this promotion now (`promoter rollback`): a reviewer's close of an
    # earlier MR of the version does not stop it (ports.git.Proposal.repropose). Only of the
    # version asked for: the job deploys what the alias names when it runs, which may be
    # another by then (a later alias move folded into the queued job, a retry after one).
    repropose: bool = False
    # The version asked for (the rollback's target); None: requested_version.
    repropose_version: str | None = None


@dataclass
class Ports:
    registry: Registry
    provider: GitProvider
    ledger: DeploymentLedger
    renderer: Renderer
    images: ModelImages | None = None
    signer: Signer | None = None
    verifier: Verifier | None = None         # checks the signature before any MR is opened
    clock: Clock | None = None               # for time-based gates (staging soak)
    history: DeploymentHistory | None = None  # what was live where (staging-first gate)
    audit: AuditHeads | None = None          # its head is anchored in each promotion commit


def _carrier(result: ProposalResult, before: DeployedState | None, version: str) -> int | None:
    """The MR a merged row with no MR of its own keeps (the target branch already held the
    version): the one whose merge landed it, so Argo CD's reports are judged against a commit
    that carries the version (service.cluster_feedback), not judged never deployed. Else the
    MR of the row before, when that row is this version merged; else None."""
    if result.landed_by is not None:
        return result.landed_by.iid
    if before is not None and before.version == version and \
            before.status == DeploymentStatus.MERGED:
        return before.mr_iid
    return None


def _quiet(step: str, outcome: str, detail: str = "") -> None:
    return None


class Pipeline:
    def __init__(self, config: PipelineConfig, ports: Ports,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.ports = ports
        self.progress: Progress = progress or _quiet

    def run(self, job: PromotionJob, steps: StepLog) -> PipelineResult:
        self.config.targets.environment(job.env)  # an environment no longer configured: parked
        if job.action == "decommission":
            return decommission(self.config, self.ports, job, steps, self.progress)
        return self._promote(job, steps)

    # ------------------------------------------------------------------ promote
    def _promote(self, job: PromotionJob, steps: StepLog) -> PipelineResult:
        registry, env = self.ports.registry, self.config.targets.environment(job.env)
        version = registry.current_version(job.model, env.alias, env.stage)
        if version is None:
            self.progress("resolve", "skipped", f"nothing points at {job.env} now")
            return PipelineResult(None, reason=f"no alias or stage points {job.model!r} at "
                                  f"{job.env} any more", requested_version=job.requested_version)
        self.progress("resolve", "ok", f"{job.env} points at version {version}")
        try:
            return self._promote_version(job, version, steps)
        except Exception as exc:
            # A job this failure ends (the queue's rule: a permanent error, or the last
            # attempt of a retried one) is not retried: MLflow must not keep showing the
            # status of before. A policy denial has written its own status and ends the job
            # done. The one place a failed promotion is tagged, on the version it was
            # deploying; only while this worker still holds the job.
            if steps.ends_job(exc):
                self._tag_failed(job, version, exc, steps,
                                 gave_up=disposition_of(exc) is Disposition.RETRY)
            raise

    def _tag_failed(self, job: PromotionJob, version: str, exc: Exception, steps: StepLog, *,
                    gave_up: bool) -> None:
        status = (DeploymentStatus.INVALID if isinstance(exc, InvalidIntent)
                  else DeploymentStatus.FAILED)
        # A bug's own text stays in the logs: it may quote anything it was handling.
        message = exc.message if isinstance(exc, PromoterError) else \
            f"unexpected {type(exc).__name__} (see promoter's logs)"
        reason = f"gave up retrying: {message}" if gave_up else message
        with contextlib.suppress(PromoterError):  # the job keeps the reason either way
            steps.before_side_effect("failed-status write-back")
            self.ports.registry.write_back(job.model, version, job.env,
                                           {"reason": reason, "status": status})

    def _promote_version(self, job: PromotionJob, version: str,
                         steps: StepLog) -> PipelineResult:
        registry = self.ports.registry
        info = registry.model_version(job.model, version)
        # Only a run the version's files come from may vouch for them (gates, MR, lineage).
        origin = lineage.run_of(registry, info)
        deployment, request_intent = self._deployment(job, info)
        # The checks `policy check` makes too (core.deployable): name, runtime switch, vLLM fit.
        tree = deployable.refuse_undeployable(
            self.config, deployable.Candidate(job.model, version, job.env, deployment),
            provider=self.ports.provider, ledger=self.ports.ledger, registry=registry,
            runtimes=self.ports.renderer.runtimes)

        decision = self._policy(job, deployment, info, origin)
        steps.record_step("policy", {"version": version, "allowed": decision.allowed,
                                     "reasons": decision.reasons})
        if not decision.allowed:
            registry.write_back(job.model, version, job.env,
                                {"status": DeploymentStatus.DENIED,
                                 "reason": "; ".join(decision.reasons)})
            self.progress("policy", "denied", "; ".join(decision.reasons))
            raise PolicyDenied(decision.reasons, version=version)
        self.progress("policy", "ok", f"{len(decision.results)} rules passed")

        artifacts = ArtifactSteps(self.config, self.ports, self.progress)
        artifact = artifacts.artifact(deployment)
        image = artifacts.image(deployment, info, origin, steps, artifact)
        signature = artifacts.signature(image, steps)
        verified = artifacts.verify(job, version, image, steps)
        if verified:
            signature = f"{signature}; {verified}" if signature else verified
        # The digest just signed and verified is the one the manifests pull, in the field the
        # runtime's descriptor names (the serving image, or the modelcar).
        pin = ImagePin(image.reference.split("@", 1)[0], image.digest) if image else None
        run_id = origin.run.run_id if origin.run else None
        pins = live_overlay.Pins(lineage=Lineage(run_id=run_id, source=info.source),
                                 image=pin if artifact == "pyfunc-image" else None,
                                 modelcar=pin if artifact == "modelcar" else None)
        request = live_overlay.request(
            self.config.targets, request_intent, job.env, origin=f"{job.model} version {version}",
            model=ModelRef(name=job.model, version=version), pins=pins,
            scaling=live_overlay.accepted_scaling(
                self.ports.provider, self.config.manifests_root, deployment.name, job.env,
                self.config.target_branch))
        files = self.ports.renderer.render(request)
        self.progress("render", "ok", f"{len(files)} files")
        shared = shared_base.affected_environments(
            tree.base, {path: text for path, text in files.items()
                        if path.startswith(f"{deployment.name}/base/")}, tree.overlays, job.env)

        # Everything from here on is seen by others (branch, MR, MLflow, ledger): only the
        # job's current holder may do it, or two workers would race on one merge request.
        steps.before_side_effect("propose")
        self._claim_name(job, deployment.name)
        # A request to propose over a reviewer's close holds for the close it was made after:
        # a retry of a job that had begun proposing may find its own MR closed since, by a
        # reviewer, and that close stands. And it holds for the version asked for only: one
        # the alias names now instead was not asked for, and its reviewer's close stands.
        asked = job.repropose_version or job.requested_version
        repropose = job.repropose and version == asked and steps.step(PROPOSAL_STARTED) is None
        # Recorded before the proposal: once it may have pushed or opened an MR, the job
        # failing later no longer means it deployed nothing (`promoter rollback` reads this).
        steps.record_step(PROPOSAL_STARTED, {"name": deployment.name})
        before = self.ports.ledger.get(job.model, job.env)
        result = PromotionProposal(self.config, self.ports, self.progress).propose(
            replace(job, repropose=repropose), deployment, info, origin, files, decision,
            image, signature, Reach(shared, tree))
        closed = closed_mr.closed_by(result, before, version,
                                     f"version {version} is proposed instead")
        status = STATUS_FOR_OUTCOME[result.outcome]
        landed, row_mr = result.merge_request, result.mr_iid
        if result.outcome is Outcome.UNCHANGED and landed is None:
            status = DeploymentStatus.MERGED  # the target branch already holds exactly this
            row_mr = _carrier(result, before, version)
        elif result.outcome is Outcome.UNCHANGED and landed is not None \
                and landed.state == "merged":
            status = self._merged_status(job, version, landed.iid)
        # A push slower than the lease may have lost the job to a successor meanwhile: its
        # ledger row (one per model and environment) must not be overwritten by this one.
        steps.before_side_effect("write-back")
        # Status goes last: whoever polls it then finds mr_url and image already there.
        write_back = {"reason": "; ".join(result.warnings)}
        if result.mr_url:
            write_back["mr_url"] = result.mr_url
        if image:
            write_back["image"] = image.reference
        if status is not DeploymentStatus.MERGED or \
                info.tags.get(f"promoter.{job.env}.status") != DEPLOYED:
            write_back["status"] = status
        # else a re-run of a merged version the clusters already run: `deployed` (told by Argo
        # CD, and not told again while nothing changes) stays.
        # The closed MR's version first: this version's status is the last word on the MR.
        closed_mr.write_back(registry, job.model, job.env, closed, self.progress)
        registry.write_back(job.model, version, job.env, write_back)
        self.ports.ledger.put(DeployedState(job.model, job.env, deployment.name, version, status,
                                            row_mr, result.head_sha))
        self.progress("write-back", "ok", f"promoter.{job.env}.status={status}")
        inputs = [("intent", digest_of(request_intent)), ("manifests", digest_of(files))]
        if image:
            inputs.append(("image", image.digest))
        return PipelineResult(
            result.outcome, status, version=version, requested_version=job.requested_version,
            name=deployment.name, mr_iid=result.mr_iid, mr_url=result.mr_url,
            head_sha=result.head_sha, commit_created=result.commit_created,
            image=image.reference if image else None, signature=signature,
            warnings=tuple(result.warnings), inputs=tuple(inputs), closed_mr=closed)

    def _merged_status(self, job: PromotionJob, version: str, iid: int) -> DeploymentStatus:
        """A re-run finding its MR merged: the status that merge's recording left (merged, or
        merged_unverified for someone else's head), kept; ``mr_opened`` while no outcome is
        recorded yet, so the MR sweep still follows the MR and records it (audit, live_version).
        A row of this version with no MR was written by a proposal that found the target branch
        holding it already (withdrawing an MR that carried something else): merged as well."""
        previous = self.ports.ledger.get(job.model, job.env)
        if previous is not None and previous.mr_iid in (iid, None) and \
                previous.version == version and \
                previous.status in (DeploymentStatus.MERGED, DeploymentStatus.MERGED_UNVERIFIED):
            return DeploymentStatus(previous.status)
        return DeploymentStatus.MR_OPENED

    def _deployment(self, job: PromotionJob,
                    info: ModelVersionInfo) -> tuple[ModelDeployment, dict[str, Any]]:
        try:
            # A hostile or broken intent (tags, logged file) is the owner's to fix: invalid.
            intent = {"apiVersion": API_VERSION, "kind": KIND,
                      **self.ports.registry.intent(info)}
            request = build_request(self.config.targets, intent, job.env,
                                    origin=f"{job.model!r} version {info.version}",
                                    model=ModelRef(name=job.model, version=info.version))
        except UserError as exc:
            raise InvalidIntent(exc.message, hint="fix the deploy.* tags or the logged "
                                 "modeldeployment.yaml, then set the alias again") from None
        return request.deployment, intent

    def _claim_name(self, job: PromotionJob, name: str) -> None:
        """core.deployable's name check only read: a second model deriving the same name may
        have passed it at the same time, each before the other's ledger row. Just before
        anything is proposed under ``name``, the ledger claims it atomically, so only one of
        them proposes."""
        deployable.refuse_shared_name(job.model, name,
                                      self.ports.ledger.claim_name(name, job.model, job.env))

    def _policy(self, job: PromotionJob, deployment: ModelDeployment, info: ModelVersionInfo,
                origin: lineage.RunOfVersion) -> Decision:
        env = self.config.targets.environment(job.env)
        history, clock, run = self.ports.history, self.ports.clock, origin.run
        facts = gates.GateFacts(
            model=job.model, version=info.version, env=job.env, namespace=env.namespace,
            tags=info.tags, metrics=run.metrics if run else {}, params=run.params if run else {},
            run_doubt=origin.doubt, now=clock.now() if clock else 0.0,
            live_since=lambda where: history.live_since(job.model, info.version, where)
            if history else None,
            history_doubt=lambda: history.doubt() if history else None,
            claimed=claimed_elsewhere(
                self.config, lambda: self.ports.provider, job.env, deployment,
                lambda: self.ports.ledger.with_statuses(OPEN_PROPOSALS)))
        return verdict(self.config.policy, env, deployment, facts)
