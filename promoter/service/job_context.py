"""What a job's handler sees of its attempt: the job, its recorded steps, and the lease that
must still be held before each side effect (promoter.service.worker runs the attempts)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from promoter.core.jobs import DEAD, Job, outcome_for_error
from promoter.service.queue import JobQueue, LeaseLost


class JobContext:
    """What a handler may do besides computing its result: steps and lease.

    The heartbeat calls lease_lost() when it finds another worker holding the job; every
    step after that raises LeaseLost, so the handler stops at its next step or side effect
    instead of racing the new holder."""

    def __init__(self, queue: JobQueue, job: Job, worker_id: str, lease_seconds: float,
                 max_attempts: int) -> None:
        self.job = job
        self.worker_id = worker_id
        self.max_attempts = max_attempts
        self._queue = queue
        self._lease_seconds = lease_seconds
        self._steps = queue.steps(job.id)
        self._lost = threading.Event()
        self._lost_because = "its heartbeat found another holder"
        # The expiry (queue time) of the lease the last before_side_effect granted: a side
        # effect begun then (a push, an MR) may still be in flight until it. Guarded by the
        # lock, which give_up takes too, so a grant cannot slip past a give-up unseen.
        self._side_effects = threading.Lock()
        self._side_effect_lease_until: float | None = None

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def ends_job(self, error: BaseException) -> bool:
        """``error`` parks the job (outcome_for_error, the rule _handle_failure applies),
        unless another worker holds the job now: then its status is that worker's to write."""
        return outcome_for_error(error, self.job.attempts, self.max_attempts).state == DEAD \
            and not self._lost.is_set()

    def lease_lost(self, because: str | None = None) -> None:
        """Another worker holds the job now (the heartbeat found out), or this attempt was
        given up (``because`` says why): stop at the next step."""
        if because is not None:
            self._lost_because = because
        self._lost.set()

    def step(self, name: str) -> dict[str, Any] | None:
        """The result of ``name`` recorded by this or an earlier attempt, if any."""
        self._raise_if_lost()
        return self._steps.get(name)

    def steps(self) -> dict[str, dict[str, Any]]:
        return dict(self._steps)

    def record_step(self, name: str, result: dict[str, Any]) -> None:
        """Durably record a finished step; LeaseLost if another worker has taken the job."""
        self._raise_if_lost()
        self._queue.record_step(self.job.id, name, result, worker_id=self.worker_id)
        self._steps[name] = dict(result)

    def before_side_effect(self, what: str) -> None:
        """LeaseLost unless this worker still holds the job; else a fresh full lease, so the
        side effect (a push, a merge request) runs well inside it."""
        with self._side_effects:
            self._raise_if_lost()
            try:
                self._side_effect_lease_until = self.extend_lease()
            except LeaseLost:
                self._lost.set()
                raise LeaseLost(f"worker {self.worker_id} lost the lease on job "
                                f"{self.job.id}; not doing its {what}") from None

    def give_up(self, because: str) -> float | None:
        """Give this attempt up (a shutdown's let-go, a timeout, an interrupt): it stops at
        its next step or side effect, as after lease_lost. Returns until when a side effect it
        already began may still be in flight: the expiry (queue time) of the lease its last
        before_side_effect granted, which a takeover or retry must wait for; None when it
        began none (its handler has done nothing others see: another worker may start now)."""
        with self._side_effects:  # waits for a grant under way; none begins after
            self.lease_lost(because)
            return self._side_effect_lease_until

    def extend_lease(self, seconds: float | None = None) -> float:
        """A fresh lease; its expiry (queue time). LeaseLost if another worker holds the job."""
        expires = self._queue.extend_lease(self.job.id, self.worker_id,
                                           seconds or self._lease_seconds)
        if expires is None:
            raise LeaseLost(f"worker {self.worker_id} lost the lease on job {self.job.id}")
        return expires

    def _raise_if_lost(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(f"worker {self.worker_id} lost the lease on job {self.job.id} "
                            f"({self._lost_because})")


JobHandler = Callable[[Job, JobContext], dict[str, Any]]
