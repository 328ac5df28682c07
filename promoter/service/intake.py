"""PromotionEvent → durable job: the one mapping shared by the webhooks and the reconcile loop.

A decommission whose version the event does not name (an alias deleted) gets the version
``*``: the job removes whatever the environment runs, so every source that notices the same
removal — the webhook, a re-delivery, the reconcile loop — produces the same idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promoter.core.events import PromotionEvent, Triggers
from promoter.core.jobs import JobKey

if TYPE_CHECKING:
    from promoter.service.queue import EnqueueResult, JobQueue
    from promoter.settings import Settings

ANY_VERSION = "*"


def triggers(settings: Settings) -> Triggers:
    """The env → trigger mapping the pure normalisation needs, from promoter.yaml."""
    return {name: env.trigger for name, env in settings.environments.items()}


def job_key(event: PromotionEvent) -> JobKey:
    if event.action == "ignore" or not event.model or not event.env:
        raise ValueError(f"event {event.trigger!r} does not make a job: {event.reason}")
    version = ANY_VERSION if event.action == "decommission" else (event.version or "")
    return JobKey(model=event.model, version=version, env=event.env, action=event.action)


def job_payload(event: PromotionEvent, delivery_id: str | None) -> dict[str, Any]:
    payload = event.describe()
    if delivery_id:
        payload["delivery_id"] = delivery_id
    return payload


def delivery_id_for(delivery_id: str | None, event: PromotionEvent,
                    events: Sequence[PromotionEvent]) -> str | None:
    """One delivery can fan out to several environments; each enqueue needs its own id."""
    if delivery_id is None or len(events) == 1:
        return delivery_id
    return f"{delivery_id}#{event.action}:{event.env}"


@dataclass(frozen=True)
class Enqueued:
    job_id: int
    created: bool
    duplicate_delivery: bool
    key: Mapping[str, str]

    def describe(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "created": self.created,
                "duplicate_delivery": self.duplicate_delivery, **self.key}


def _enqueued(result: EnqueueResult) -> Enqueued:
    key = result.job.key
    return Enqueued(result.job.id, result.created, result.duplicate_delivery,
                    {"model": key.model, "version": key.version, "env": key.env,
                     "action": key.action})


async def enqueue_async(queue: JobQueue, events: Sequence[PromotionEvent], *, source: str,
                        delivery_id: str | None) -> list[Enqueued]:
    """Store each actionable event; returns only after every one is durable."""
    actionable = [event for event in events if event.action != "ignore"]
    stored = []
    for event in actionable:
        one_id = delivery_id_for(delivery_id, event, actionable)
        result = await queue.enqueue_async(job_key(event), job_payload(event, one_id),
                                           source=source, delivery_id=one_id)
        stored.append(_enqueued(result))
    return stored


def enqueue(queue: JobQueue, events: Sequence[PromotionEvent], *, source: str,
            delivery_id: str | None = None) -> list[Enqueued]:
    actionable = [event for event in events if event.action != "ignore"]
    stored = []
    for event in actionable:
        one_id = delivery_id_for(delivery_id, event, actionable)
        stored.append(_enqueued(queue.enqueue(job_key(event), job_payload(event, one_id),
                                              source=source, delivery_id=one_id)))
    return stored
