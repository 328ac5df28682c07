"""Level-triggered reconciliation, the pure part: desired targets vs. what was last recorded.

For each registered model and environment, the *target* is the version the environment's
trigger points at: its alias if set, else the newest version in its legacy stage. The service
reads aliases for every model (one paged listing) but stages only for models with versions
changed since the last pass (MLflow records stage moves on the version, not aliases), so for
the other models the previously recorded stage target stands, as long as it was read for the
stage the environment's trigger names now (an environment added to promoter.yaml, or its
trigger's stage changed, asks for a lookup: ``stages_outdated``). Whatever differs from the
record becomes a promote or decommission event; so does a target the newest job of its
(model, env) did not ask for, though the record agrees: a webhook's job moved the deployment
since the record was made (alias set to 2 by a delivered hook, then back to 1 by a lost one).
A done job stands for the version it resolved when it ran, not the one its event named
(core.jobs.settled_key): asked for 1, it deployed 2 if the alias had moved on by then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from promoter.core.events import PromotionEvent, Triggers
from promoter.core.jobs import JobAction, JobKey


@dataclass(frozen=True)
class Observed:
    """What one environment's trigger pointed at, by alias and by legacy stage."""

    alias_version: str | None = None
    stage_version: str | None = None
    # The stage the trigger named when stage_version was read; None: not read for any (an
    # alias-only trigger, or a record written before promoter kept this).
    stage_trigger: str | None = None

    @property
    def target(self) -> str | None:
        return self.alias_version or self.stage_version


def observe(triggers: Triggers, aliases: Mapping[str, str],
            stages: Mapping[str, str] | None,
            previous: Mapping[str, Observed]) -> dict[str, Observed]:
    """Each environment's Observed for one model.

    ``stages`` (stage → newest version) is None when they were not read this pass: the
    recorded stage targets stand (still current unless ``stages_outdated``; when a lookup
    asked for by that failed, the record keeps saying which stage it was read for, so the
    next pass asks again). A stage-triggered environment is recorded even with nothing in
    its stage, so that the record says its stage was read.
    """
    current: dict[str, Observed] = {}
    for env, trigger in triggers.items():
        alias_version = aliases.get(trigger.alias) if trigger.alias else None
        stage_version, stage_trigger = None, None
        if trigger.stage and stages is None:
            recorded = previous.get(env, Observed())
            stage_version, stage_trigger = recorded.stage_version, recorded.stage_trigger
        elif trigger.stage and stages is not None:
            stage_version = _stage_lookup(stages, trigger.stage)
            stage_trigger = trigger.stage
        if alias_version or stage_version or stage_trigger:
            current[env] = Observed(alias_version, stage_version, stage_trigger)
    return current


def stages_outdated(triggers: Triggers, previous: Mapping[str, Observed]) -> bool:
    """Whether a stage-triggered environment's record was not read for the stage its trigger
    names now: the environment was added, its stage changed, or the record predates
    stage_trigger. Without a lookup its target would wait for the model's next version
    change, however long that takes."""
    for env, trigger in triggers.items():
        recorded = previous.get(env)
        if trigger.stage and (recorded is None or recorded.stage_trigger is None
                              or recorded.stage_trigger.lower() != trigger.stage.lower()):
            return True
    return False


def plan(model: str, current: Mapping[str, Observed], previous: Mapping[str, Observed],
         newest_jobs: Mapping[str, JobKey] | None = None) -> list[PromotionEvent]:
    """Events that move the record from ``previous`` to ``current`` for one model, and that
    bring each environment to its target where the newest job of it (``newest_jobs``, by
    environment: the triggered environments only; each the key it stands for, see
    core.jobs.settled_key) asked for, or deployed, something else."""
    newest_jobs = newest_jobs or {}
    planned = []
    for env in sorted(set(current) | set(previous) | set(newest_jobs)):
        now = current.get(env, Observed()).target
        before = previous.get(env, Observed()).target
        job = newest_jobs.get(env)
        if now == before and _asked_for(job, now):
            continue
        if now is not None:
            was = f" (was {before})" if before != now and before else \
                f" (the last job was for {_asked(job)})" if before == now and job else ""
            planned.append(PromotionEvent(action="promote", source="reconcile",
                                          reason=f"{_how(current[env])} points at {now}{was}",
                                          model=model, version=now, env=env,
                                          trigger="reconcile"))
        elif before is not None or job is not None:
            was = f"was version {before}" if before else f"the last job was for {_asked(job)}"
            planned.append(PromotionEvent(action="decommission", source="reconcile",
                                          reason=f"nothing targets {env} any more ({was})",
                                          model=model, version=None, env=env,
                                          trigger="reconcile"))
    return planned


def deployed_by_jobs(newest_jobs: Mapping[str, Mapping[str, JobKey]]) -> set[str]:
    """The models of ``newest_jobs`` ({model: {env: its newest job}}) whose newest job of
    some environment is not a decommission: a model whose every newest job is one (one
    found deleted, decommissioned everywhere) has nothing left to decommission."""
    return {model for model, jobs in newest_jobs.items()
            if any(job.action != JobAction.DECOMMISSION for job in jobs.values())}


def _asked_for(job: JobKey | None, target: str | None) -> bool:
    """Whether the newest job asked for ``target`` (None: a decommission) — once done, by the
    version it resolved; no job asked nothing else (jobs are kept, so a deployment without
    one was never acted on)."""
    if job is None:
        return True
    if job.action == JobAction.DECOMMISSION:
        return target is None
    return job.version == target


def _asked(job: JobKey | None) -> str:
    if job is None or job.action == JobAction.DECOMMISSION:
        return "its decommission"
    return f"version {job.version}"


def _how(observed: Observed) -> str:
    return "alias" if observed.alias_version else "stage"


def _stage_lookup(stages: Mapping[str, str], stage: str) -> str | None:
    for name, version in stages.items():
        if name.lower() == stage.lower():
            return version
    return None
