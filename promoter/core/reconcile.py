"""Level-triggered reconciliation, the pure part: desired targets vs. what was last recorded.

For each registered model and environment, the *target* is the version the environment's
trigger points at: its alias if set, else the newest version in its legacy stage. The service
reads aliases for every model (one paged listing) but stages only for models with versions
changed since the last pass (MLflow records stage moves on the version, not aliases), so for
the other models the previously recorded stage target stands. Whatever differs from the
record becomes a promote or decommission event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from promoter.core.events import PromotionEvent, Triggers


@dataclass(frozen=True)
class Observed:
    """What one environment's trigger pointed at, by alias and by legacy stage."""

    alias_version: str | None = None
    stage_version: str | None = None

    @property
    def target(self) -> str | None:
        return self.alias_version or self.stage_version


def observe(triggers: Triggers, aliases: Mapping[str, str],
            stages: Mapping[str, str] | None,
            previous: Mapping[str, Observed]) -> dict[str, Observed]:
    """Each environment's Observed for one model.

    ``stages`` (stage → newest version) is None when the model's versions did not change since
    the last pass; the recorded stage targets are then still current.
    """
    current: dict[str, Observed] = {}
    for env, trigger in triggers.items():
        alias_version = aliases.get(trigger.alias) if trigger.alias else None
        if not trigger.stage:
            stage_version = None
        elif stages is None:
            stage_version = previous.get(env, Observed()).stage_version
        else:
            stage_version = _stage_lookup(stages, trigger.stage)
        if alias_version or stage_version:
            current[env] = Observed(alias_version, stage_version)
    return current


def plan(model: str, current: Mapping[str, Observed],
         previous: Mapping[str, Observed]) -> list[PromotionEvent]:
    """Events that move the record from ``previous`` to ``current`` for one model."""
    planned = []
    for env in sorted(set(current) | set(previous)):
        now = current.get(env, Observed()).target
        before = previous.get(env, Observed()).target
        if now == before:
            continue
        if now is not None:
            why = (f"{_how(current[env])} points at {now}"
                   + (f" (was {before})" if before else ""))
            planned.append(PromotionEvent(action="promote", source="reconcile", reason=why,
                                          model=model, version=now, env=env,
                                          trigger="reconcile"))
        else:
            planned.append(PromotionEvent(action="decommission", source="reconcile",
                                          reason=f"nothing targets {env} any more "
                                                 f"(was version {before})",
                                          model=model, version=None, env=env,
                                          trigger="reconcile"))
    return planned


def _how(observed: Observed) -> str:
    return "alias" if observed.alias_version else "stage"


def _stage_lookup(stages: Mapping[str, str], stage: str) -> str | None:
    for name, version in stages.items():
        if name.lower() == stage.lower():
            return version
    return None
