"""Ports the promotion pipeline needs beyond the registry, image and git ports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from promoter.ports.image import BuiltImage, CheckedVersion, ModelcarRequest


class StepLog(Protocol):
    """Per-job step results that survive a crash (the worker's JobContext implements it)."""

    def step(self, name: str) -> dict[str, Any] | None: ...

    def record_step(self, name: str, result: dict[str, Any]) -> None: ...

    def before_side_effect(self, what: str) -> None:
        """Raise unless this attempt still owns the job, and keep owning it for a while.

        Called right before a change others see (a push, a merge request, a write-back):
        a worker that lost the job to another must stop there rather than race it."""

    def ends_job(self, error: BaseException) -> bool:
        """Whether ``error`` parks the job for good (the queue's rule, core.jobs: a permanent
        error, or the last attempt of a retried one) while this worker still holds it: the
        pipeline then tells MLflow it failed."""


class ModelImages(Protocol):
    def build(self, version: CheckedVersion, repository: str,
              labels: Mapping[str, str]) -> BuiltImage:
        """The serving image of a registered model version, pushed to ``repository``: built
        from ``version``'s files and labelled with its facts, without reading the version or
        its run again. Found without downloading anything when an image from the same inputs
        exists."""

    def build_modelcar(self, version: CheckedVersion, repository: str,
                       request: ModelcarRequest, labels: Mapping[str, str]) -> BuiltImage:
        """The modelcar of a registered model version (its files under /models, laid out
        for ``request.runtime``), pushed to ``repository``; same inputs → same digest."""


@dataclass(frozen=True)
class DeployedState:
    model: str
    env: str
    name: str          # deployment name (directory under manifests/)
    version: str
    status: str        # mr_opened | approved | merged | closed | decommissioning | ...
    mr_iid: int | None = None
    head_sha: str | None = None
    # The forge project ``mr_iid`` is numbered in (GitLab's numeric id; iids restart per
    # project). None: not known (the ledger fills it in from the head promoter pushed to the
    # MR; rows written before it was recorded are read as the configured project's).
    mr_project: int | None = None


class DeploymentLedger(Protocol):
    """What promoter last did for each (model, env): the version an alias pointed at (MLflow's
    alias.deleted carries no version) and the MR head promoter pushed (hooks check it)."""

    def get(self, model: str, env: str) -> DeployedState | None: ...

    def put(self, state: DeployedState) -> None: ...

    def by_deployment(self, name: str, env: str) -> DeployedState | None: ...

    def owners(self, name: str) -> frozenset[str]:
        """The models owning deployment ``name``: a row of this ledger in any environment,
        or a claim (``claim_name``) whose first proposal may not have a row yet."""

    def with_statuses(self, statuses: Iterable[str]) -> list[DeployedState]:
        """Every row in one of ``statuses`` that names its MR (``mr_iid`` set), in any
        environment: e.g. the open proposals whose GPUs the team quota counts."""

    def environments_in_use(self, name: str) -> frozenset[str]:
        """The environments where deployment ``name`` runs or a proposal of it is under way:
        rows whose MR is open or merged, and the environment of a claim still in flight."""

    def proposals_under_way(self, name: str) -> frozenset[str]:
        """The environments where a proposal of deployment ``name`` is under way: rows whose
        MR is open (not merged), and the environment of a claim still in flight."""

    def claim_name(self, name: str, model: str, env: str) -> frozenset[str]:
        """Claim deployment ``name`` for ``model``, about to propose into ``env``, unless
        another model owns it (a row of this ledger, or a claim); returns those other models
        (empty: the claim holds). Atomic: of two models claiming one name at once, exactly one
        gets it. Until the row of ``env`` is written the claim holds the name for ``model``
        even if its every other row under it is decommissioned."""


class DeploymentHistory(Protocol):
    """What was live where, and since when (read from the audit trail)."""

    def live_since(self, model: str, version: str, env: str) -> float | None:
        """When ``version`` of ``model`` first became live in ``env`` (its MR merged), whether
        or not it is still live; None when it never was. Only from what the trail verifies:
        an entry past its first bad line never counts."""

    def doubt(self) -> str | None:
        """Why entries of the history do not count (the trail does not verify from a line
        on), for a denial's reason; None when every entry counts."""


class ChainHead(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...


class AuditHeads(Protocol):
    """The audit trail's head, anchored in each promotion commit (core.audit_anchor)."""

    def recorded_head(self) -> ChainHead | None: ...


class Progress(Protocol):
    def __call__(self, step: str, outcome: str, detail: str = "") -> None: ...
