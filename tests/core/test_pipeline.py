"""The promotion use case (promoter/core/pipeline.py) against small in-memory ports.

The peers below keep the port contracts (promoter/ports/): the registry resolves alias before
stage and records write-backs as tags; the provider is level-triggered (a proposal equal to
what exists changes nothing) and keeps branches, commits and MRs; the signer finds its own
signatures. Real adapters and processes are exercised in tests/pipeline*/.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from ruamel.yaml import YAML

from promoter.core.jobs import DEAD, MAX_ATTEMPTS, outcome_for_error
from promoter.core.pipeline import Pipeline, Ports, PromotionJob
from promoter.core.results import PipelineResult
from promoter.core.spec import intent_from_tags
from promoter.errors import ConfigError, NotFoundError, PermanentError, PolicyDenied, TransientError
from promoter.ports.git import FileContent, MergeRequest, Outcome, Proposal, ProposalResult, texts
from promoter.ports.image import BuiltImage, CheckedVersion, ModelcarRequest, SignatureInfo
from promoter.ports.pipeline import DeployedState
from promoter.ports.registry import (
    WRITE_BACK_FIELDS,
    HuggingFaceFiles,
    ModelVersionInfo,
    RegisteredModelInfo,
    RunInfo,
)
from promoter.rendering import renderer
from promoter.service.ledger import IN_USE, PROPOSING
from promoter.settings import Settings

MODEL = "Fraud Detector"
NAME = "fraud-detector"
INTENT_TAGS = {"deploy.owner.team": "risk", "deploy.owner.costCenter": "cc-7",
               "validation_status": "passed"}


# ============================================================ in-memory ports

class MemoryRegistry:
    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], ModelVersionInfo] = {}
        self.alias: dict[str, dict[str, str]] = {}
        self.stages: dict[str, dict[str, str]] = {}
        self.runs: dict[str, RunInfo] = {}
        self.logged_models: dict[str, str | None] = {}   # MLflow 3 model id -> source run
        self.writes: list[tuple[str, str, str, dict[str, str]]] = []
        self.unreachable_writes = 0  # the next N write-backs fail as MLflow being down would
        self.live: dict[tuple[str, str], str] = {}   # registered-model live_version tags
        # A version's Hugging Face directory (names, config.json); unset: none logged with it.
        self.hf_files: dict[tuple[str, str], HuggingFaceFiles] = {}
        self.hf_reads: list[tuple[str, str]] = []

    def add(self, model: str, version: str, tags: Mapping[str, str] = INTENT_TAGS) -> None:
        run_id = f"run{version}"
        self.runs[run_id] = RunInfo(run_id, metrics={"auc": 0.91}, params={"C": "1.0"},
                                    artifact_uri=f"mlflow-artifacts:/1/{run_id}/artifacts")
        self.versions[(model, version)] = ModelVersionInfo(
            model, version, f"mlflow-artifacts:/1/{run_id}/artifacts/model", run_id, None,
            dict(tags))

    def set_alias(self, model: str, alias: str, version: str | None) -> None:
        aliases = self.alias.setdefault(model, {})
        if version is None:
            aliases.pop(alias, None)
        else:
            aliases[alias] = version

    def tags(self, model: str, version: str) -> Mapping[str, str]:
        return self.versions[(model, version)].tags

    # --- the Registry port
    def ping(self) -> None:
        return None

    def model_version(self, model: str, version: str) -> ModelVersionInfo:
        try:
            return self.versions[(model, version)]
        except KeyError:
            raise NotFoundError(f"{model!r} has no version {version}") from None

    def run(self, run_id: str) -> RunInfo:
        return self.runs[run_id]

    def logged_model_run_id(self, model_id: str) -> str | None:
        return self.logged_models.get(model_id)

    def signature(self, model: str, version: str) -> dict[str, Any] | None:
        return None

    def artifact_location(self, model: str, version: str) -> str:
        return self.model_version(model, version).source

    def huggingface_files(self, model: str, version: str) -> HuggingFaceFiles:
        self.model_version(model, version)   # NotFoundError as the registry answers
        self.hf_reads.append((model, version))
        return self.hf_files.get((model, version), HuggingFaceFiles())

    def intent(self, version: ModelVersionInfo) -> dict[str, Any]:
        try:
            return intent_from_tags(version.tags)
        except ValueError as exc:
            raise PermanentError(str(exc)) from None

    def aliases(self, model: str) -> dict[str, str]:
        return dict(self.alias.get(model, {}))

    def stage_versions(self, model: str) -> dict[str, str]:
        return dict(self.stages.get(model, {}))

    def current_version(self, model: str, alias: str | None, stage: str | None) -> str | None:
        if alias and self.aliases(model).get(alias):
            return self.aliases(model)[alias]
        return self.stage_versions(model).get(stage) if stage else None

    def live_version(self, model: str, env: str) -> str | None:
        return self.live.get((model, env))

    def set_live_version(self, model: str, env: str, version: str | None) -> None:
        if version is None:
            self.live.pop((model, env), None)
        else:
            self.live[(model, env)] = version

    def write_back(self, model: str, version: str, env: str, values: Mapping[str, str]) -> None:
        if self.unreachable_writes:
            self.unreachable_writes -= 1
            raise TransientError("MLflow is unreachable")
        unknown = set(values) - set(WRITE_BACK_FIELDS)
        if unknown:
            raise ValueError(f"unknown write-back fields {unknown}")
        self.writes.append((model, version, env, dict(values)))
        info = self.versions[(model, version)]
        tags = {**info.tags, **{f"promoter.{env}.{k}": v for k, v in values.items()}}
        self.versions[(model, version)] = dataclasses.replace(info, tags=tags)

    def models(self) -> Iterator[RegisteredModelInfo]:
        for model in sorted({model for model, _ in self.versions}):
            yield RegisteredModelInfo(model, self.aliases(model))

    def versions_updated_since(self, since_ms: int) -> Iterator[ModelVersionInfo]:
        return iter(())


class MemoryProvider:
    """Branches as {path: content}; one commit per change; MRs in a list, newest last."""

    def __init__(self) -> None:
        self.branches: dict[str, dict[str, FileContent]] = {"main": {}}
        self.commits: list[tuple[str, str]] = []   # (branch, version)
        self.mrs: list[MergeRequest] = []
        self.proposals: list[Proposal] = []
        self.lost_answers = 0  # the next N proposals fail before anything is written

    def propose(self, proposal: Proposal) -> ProposalResult:
        if self.lost_answers:
            self.lost_answers -= 1
            raise TransientError("the forge answered 502")
        self.proposals.append(proposal)
        target = self.branches[proposal.target_branch]
        wanted = {p: t for p, t in target.items() if not p.startswith(proposal.managed_prefixes)}
        for path, content in proposal.files.items():   # None: delete the file if it is there
            if content is None:
                wanted.pop(path, None)
            else:
                wanted[path] = content
        changed = tuple(sorted(p for p in set(target) | set(wanted)
                               if target.get(p) != wanted.get(p)))
        mr = self.find(proposal.name, proposal.env)
        open_mr = mr if mr is not None and mr.state == "opened" else None
        if not changed and open_mr is None:
            return ProposalResult(Outcome.UNCHANGED, None, None, False)
        def without_riders(files: Mapping[str, str]) -> dict[str, str]:
            return {p: t for p, t in files.items() if p not in proposal.riders}

        if open_mr and without_riders(self.branches.get(proposal.branch, {})) == \
                without_riders(wanted) and open_mr.version == proposal.version:
            return ProposalResult(Outcome.UNCHANGED, open_mr, open_mr.head_sha, False)
        wanted.update(proposal.riders)   # riders go with a commit, never cause one
        self.branches[proposal.branch] = wanted
        self.commits.append((proposal.branch, proposal.version))
        sha = hashlib.sha1(repr(sorted(wanted.items())).encode()).hexdigest()
        fields: dict[str, Any] = dict(title=proposal.title, description=proposal.description,
                      labels=proposal.labels, version=proposal.version, head_sha=sha,
                      approvals_required=proposal.approvals_required,
                      auto_merge=proposal.auto_merge)
        if open_mr is not None:
            updated = dataclasses.replace(open_mr, **fields)
            self.mrs[self.mrs.index(open_mr)] = updated
            return ProposalResult(Outcome.UPDATED, updated, sha, True, changed_paths=changed)
        iid = len(self.mrs) + 1
        created = MergeRequest(iid=iid, id=1000 + iid, url=f"https://git.test/mr/{iid}",
                               state="opened", source_branch=proposal.branch,
                               target_branch=proposal.target_branch, **fields)
        self.mrs.append(created)
        return ProposalResult(Outcome.CREATED, created, sha, True, changed_paths=changed)

    def get(self, iid: int) -> MergeRequest:
        return self.mrs[iid - 1]

    def find(self, name: str, env: str) -> MergeRequest | None:
        found = [mr for mr in self.mrs if mr.source_branch == f"promote/{name}/{env}"]
        return found[-1] if found else None

    def files(self, prefix: str, ref: str) -> dict[str, str]:
        return texts({p: t for p, t in self.branches.get(ref, {}).items()
                      if p.startswith(prefix)})

    def paths(self, prefix: str, ref: str) -> frozenset[str] | None:
        if ref not in self.branches:
            return None
        return frozenset(p for p in self.branches[ref] if p.startswith(prefix))

    def read_many(self, paths: Sequence[str], ref: str) -> dict[str, str]:
        branch = self.branches.get(ref, {})
        return texts({path: branch[path] for path in paths if path in branch})

    def read(self, path: str, ref: str) -> str | None:
        return self.read_many([path], ref).get(path)

    def merge(self, iid: int) -> None:
        mr = self.get(iid)
        self.branches[mr.target_branch] = dict(self.branches[mr.source_branch])
        self.mrs[iid - 1] = dataclasses.replace(mr, state="merged")

    def open_mrs(self) -> list[MergeRequest]:
        return [mr for mr in self.mrs if mr.state == "opened"]

    def open_merge_request(self, branch: str) -> MergeRequest | None:
        found = [mr for mr in self.open_mrs() if mr.source_branch == branch]
        return found[-1] if found else None


class MemoryLedger:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], DeployedState] = {}
        self.claims: dict[str, str] = {}  # deployment name → the model that claimed it
        self.claimed_envs: dict[str, str] = {}  # deployment name → the env its claim is for

    def get(self, model: str, env: str) -> DeployedState | None:
        return self.rows.get((model, env))

    def put(self, state: DeployedState) -> None:
        self.rows[(state.model, state.env)] = state
        if self.claimed_envs.get(state.name) == state.env:   # the claimed proposal landed
            del self.claimed_envs[state.name]

    def by_deployment(self, name: str, env: str) -> DeployedState | None:
        found = [s for s in self.rows.values() if s.name == name and s.env == env]
        return found[0] if found else None

    def owners(self, name: str) -> frozenset[str]:
        claimed = {self.claims[name]} if name in self.claims else set()
        return frozenset({s.model for s in self.rows.values() if s.name == name} | claimed)

    def with_statuses(self, statuses: Iterable[str]) -> list[DeployedState]:
        return [s for s in self.rows.values() if s.status in statuses and s.mr_iid is not None]

    def environments_in_use(self, name: str) -> frozenset[str]:
        in_use = {s.env for s in self.rows.values() if s.name == name and s.status in IN_USE}
        claimed = {self.claimed_envs[name]} if name in self.claimed_envs else set()
        return frozenset(in_use | claimed)

    def proposals_under_way(self, name: str) -> frozenset[str]:
        proposing = {s.env for s in self.rows.values() if s.name == name
                     and s.status in PROPOSING}
        claimed = {self.claimed_envs[name]} if name in self.claimed_envs else set()
        return frozenset(proposing | claimed)

    def claim_name(self, name: str, model: str, env: str) -> frozenset[str]:
        others = self.owners(name) - {model}
        if not others:
            self.claims[name] = model
            self.claimed_envs[name] = env
        return frozenset(others)


class CountingImages:
    """Both artifacts of the image port; ``calls`` lists every build, ``kinds`` which one,
    ``checked`` the version facts each was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.kinds: list[str] = []
        self.modelcars: list[ModelcarRequest] = []
        self.checked: list[CheckedVersion] = []

    def build(self, version: CheckedVersion, repository: str,
              labels: Mapping[str, str]) -> BuiltImage:
        return self._built("pyfunc-image", version, repository)

    def build_modelcar(self, version: CheckedVersion, repository: str,
                       request: ModelcarRequest, labels: Mapping[str, str]) -> BuiltImage:
        self.modelcars.append(request)
        return self._built("modelcar", version, repository)

    def _built(self, kind: str, checked: CheckedVersion, repository: str) -> BuiltImage:
        model, version = checked.model, checked.version
        self.calls.append((model, version, repository))
        self.checked.append(checked)
        self.kinds.append(kind)
        digest = "sha256:" + hashlib.sha256(f"{kind}:{model}/{version}".encode()).hexdigest()
        return BuiltImage(f"{repository}@{digest}", digest, 1234, ["sha256:" + "1" * 64], 1234)


class CountingSigner:
    key_hint = "keyhint0123456789"  # the Verifier port's: which key verify() checks with

    def __init__(self) -> None:
        self.signed: list[str] = []

    def sign(self, reference_with_digest: str) -> SignatureInfo:
        created = [] if reference_with_digest in self.signed else ["bundle", "legacy"]
        self.signed.append(reference_with_digest)
        return SignatureInfo(reference_with_digest, reference_with_digest.split("@")[1],
                             ["bundle", "legacy"], "keyhint0123456789", created)

    def verify(self, reference_with_digest: str) -> SignatureInfo:
        if reference_with_digest not in self.signed:
            raise PermanentError(f"{reference_with_digest} is not signed")
        return SignatureInfo(reference_with_digest, reference_with_digest.split("@")[1],
                             ["bundle", "legacy"], "keyhint0123456789")


class MemorySteps:
    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.side_effects: list[str] = []  # what the pipeline asked to fence, in order

    def step(self, name: str) -> dict[str, Any] | None:
        return self.results.get(name)

    def record_step(self, name: str, result: dict[str, Any]) -> None:
        self.results[name] = dict(result)

    def before_side_effect(self, what: str) -> None:
        self.side_effects.append(what)

    def ends_job(self, error: BaseException) -> bool:  # the first of the queue's 8 attempts
        return outcome_for_error(error, 1, MAX_ATTEMPTS).state == DEAD


# ============================================================ fixtures

SETTINGS = Settings.model_validate({
    "environments": {
        "staging": {"trigger": {"alias": "staging", "stage": "Staging"},
                    "namespace": "models-staging", "approvals": 1, "auto_merge": True},
        "production": {"trigger": {"alias": "production", "stage": "Production"},
                       "namespace": "models-production", "approvals": 2,
                       "allowed_gpu_types": ["nvidia-a100"]}},
    "image": {"repository": "registry.test/models/{name}"},
    "git": {"target_branch": "main", "manifests_dir": "deploy"},
    "mlflow": {"ui_url": "https://mlflow.test"},
    "policy": {"required_tags": {"validation_status": "passed"}},
})
RENDERER = renderer(SETTINGS)  # real templates, built once (the Jinja environment is the cost)


@dataclasses.dataclass
class World:
    registry: MemoryRegistry
    provider: MemoryProvider
    ledger: MemoryLedger
    images: CountingImages
    signer: CountingSigner
    progress: list[tuple[str, str]]
    settings: Settings = SETTINGS
    ports_extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # clock, history

    def run(self, env: str = "production", requested: str | None = None,
            steps: MemorySteps | None = None, model: str = MODEL,
            action: str = "promote") -> PipelineResult:
        ports = Ports(self.registry, self.provider, self.ledger, RENDERER, self.images,
                      self.signer, **self.ports_extra)
        pipeline = Pipeline(self.settings.pipeline_config(), ports,
                            lambda step, outcome, detail="": self.progress.append((step, outcome)))
        return pipeline.run(PromotionJob(model, env, action, requested), steps or MemorySteps())

    def promote(self, version: str, env: str = "production", **kwargs: Any) -> PipelineResult:
        self.registry.set_alias(kwargs.get("model", MODEL), env, version)
        return self.run(env, version, **kwargs)


@pytest.fixture
def world() -> World:
    registry = MemoryRegistry()
    for version in ("1", "2", "3"):
        registry.add(MODEL, version)
    return World(registry, MemoryProvider(), MemoryLedger(), CountingImages(), CountingSigner(),
                 [])


def overlay(world: World, env: str = "production", branch: str | None = None) -> str:
    tree = world.provider.branches[branch or f"promote/{NAME}/{env}"]
    return tree[f"deploy/{NAME}/overlays/{env}/kustomization.yaml"]


# ============================================================ resolve: what the alias says now

def test_deploys_what_the_alias_points_at_now_not_the_requested_version(world: World) -> None:
    world.registry.set_alias(MODEL, "production", "3")
    result = world.run(requested="2")
    assert (result.version, result.requested_version) == ("3", "2")
    assert world.provider.get(result.mr_iid).version == "3"
    assert 'promoter.dev/model-version: "3"' in overlay(world)
    assert world.images.calls == [(MODEL, "3", f"registry.test/models/{NAME}")]
    assert {version for _, version, _, _ in world.registry.writes} == {"3"}


def test_a_rollback_of_the_alias_deploys_the_older_version(world: World) -> None:
    world.promote("3")
    result = world.promote("1")
    assert (result.version, result.outcome) == ("1", "updated")
    assert [mr.version for mr in world.provider.open_mrs()] == ["1"]


def test_legacy_stage_is_used_when_no_alias_is_set(world: World) -> None:
    world.registry.stages[MODEL] = {"Production": "2"}
    assert world.run(requested="3").version == "2"


def test_skipped_when_nothing_points_at_the_environment(world: World) -> None:
    result = world.run(requested="2")
    assert result.skipped
    assert "no alias or stage" in result.reason
    assert (world.provider.proposals, world.images.calls, world.registry.writes) == ([], [], [])
    assert world.progress == [("resolve", "skipped")]


def test_unknown_environment_is_a_configuration_error(world: World) -> None:
    with pytest.raises(ConfigError, match="unknown environment 'qa'"):
        world.run(env="qa")


# ============================================================ steps are reused on a re-run

class _LostDuring(MemorySteps):
    """A step log whose job goes to another worker right before the side effect ``lost``."""

    def __init__(self, lost: str) -> None:
        super().__init__()
        self.lost = lost

    def before_side_effect(self, what: str) -> None:
        super().before_side_effect(what)
        if what == self.lost:
            raise TransientError(f"lease lost before the {what}")


@pytest.mark.parametrize("action", ["promote", "decommission"])
def test_a_job_lost_during_the_push_leaves_the_write_back_to_its_new_holder(
        world: World, action: str) -> None:
    """A push slower than the lease: the successor owns the job (and the ledger row of the
    model and environment); this attempt must not write its status over the successor's."""
    if action == "decommission":
        world.provider.merge(world.promote("2").mr_iid)
        world.registry.set_alias(MODEL, "production", None)
    else:
        world.registry.set_alias(MODEL, "production", "2")
    ledger_before, writes_before = dict(world.ledger.rows), len(world.registry.writes)
    steps = _LostDuring("write-back")
    with pytest.raises(TransientError, match="write-back"):
        world.run(steps=steps, action=action)
    assert steps.side_effects == ["propose", "write-back"]
    assert (world.ledger.rows, len(world.registry.writes)) == (ledger_before, writes_before)


def test_rerun_reuses_image_and_signature_and_changes_nothing(world: World) -> None:
    steps = MemorySteps()
    first = world.promote("2", steps=steps)
    second = world.run(requested="2", steps=steps)
    assert (first.outcome, second.outcome) == ("created", "unchanged")
    assert len(world.images.calls) == 1
    assert len(world.signer.signed) == 1
    assert len(world.provider.commits) == 1
    assert len(world.provider.open_mrs()) == 1
    assert second.image == first.image and second.signature == first.signature
    assert ("image", "reused") in world.progress


def test_rerun_after_the_alias_moved_builds_and_signs_the_new_version(world: World) -> None:
    steps = MemorySteps()
    first = world.promote("2", steps=steps)
    second = world.promote("3", steps=steps)
    assert [version for _, version, _ in world.images.calls] == ["2", "3"]
    assert len(set(world.signer.signed)) == 2
    assert second.image != first.image
    assert steps.results["image"]["version"] == "3"
    assert steps.results["signature"]["digest"] == second.image.split("@")[1]
    assert second.outcome == "updated" and second.mr_iid == first.mr_iid


def test_an_attempt_that_failed_at_the_forge_resumes_without_rebuilding(world: World) -> None:
    steps = MemorySteps()
    world.provider.lost_answers = 1
    with pytest.raises(TransientError):
        world.promote("2", steps=steps)
    assert world.registry.writes == [] and world.provider.mrs == []
    result = world.run(requested="2", steps=steps)
    assert result.outcome == "created"
    assert (len(world.images.calls), len(world.signer.signed)) == (1, 1)
    assert len(world.provider.commits) == 1


def test_a_retry_after_the_intent_changed_builds_and_signs_for_the_new_intent(
        world: World) -> None:
    """The intent is read again on every attempt. Between the two, the owner renamed the
    deployment: the retry must not pin the image built into the old name's repository, nor
    count the old repository's signature (same digest) as the new one's."""
    steps = MemorySteps()
    world.provider.lost_answers = 1
    with pytest.raises(TransientError):
        world.promote("2", steps=steps)
    world.registry.add(MODEL, "2", {**INTENT_TAGS, "deploy.name": "fraud-v2"})
    result = world.run(requested="2", steps=steps)
    assert [repository for _, _, repository in world.images.calls] == [
        "registry.test/models/fraud-detector", "registry.test/models/fraud-v2"]
    assert result.image is not None and result.image.startswith("registry.test/models/fraud-v2@")
    assert world.signer.signed[-1] == result.image
    assert steps.results["signature"]["reference"] == result.image


def test_an_attempt_that_failed_at_the_write_back_finishes_without_a_second_commit(
        world: World) -> None:
    steps = MemorySteps()
    world.registry.unreachable_writes = 1
    with pytest.raises(TransientError):
        world.promote("2", steps=steps)
    assert len(world.provider.open_mrs()) == 1 and world.ledger.rows == {}
    result = world.run(requested="2", steps=steps)
    assert (result.outcome, result.status) == ("unchanged", "mr_opened")
    assert len(world.provider.commits) == 1 and len(world.provider.open_mrs()) == 1
    assert world.registry.tags(MODEL, "2")["promoter.production.mr_url"] == result.mr_url
    assert world.ledger.get(MODEL, "production") is not None
    assert len(world.images.calls) == 1


def test_no_image_repository_skips_the_serving_image_and_signature(world: World) -> None:
    world.settings = SETTINGS.model_copy(update={"image": SETTINGS.image.model_copy(
        update={"repository": None})})
    world.registry.add(MODEL, "5", {**INTENT_TAGS, "deploy.runtime": "deployment"})
    result = world.promote("5")
    assert (result.image, result.signature) == (None, None)
    assert world.images.calls == [] and world.signer.signed == []
    assert "image" not in world.registry.writes[-1][3]
    assert ("image", "skipped") in world.progress


def test_a_modelcar_runtime_without_an_image_repository_opens_nothing(world: World) -> None:
    """Its manifests mount or pull the modelcar: rendered without one, a Deployment mounts a
    volume that does not exist and an InferenceService has no storageUri."""
    world.settings = SETTINGS.model_copy(update={"image": SETTINGS.image.model_copy(
        update={"repository": None, "modelcar_repository": None})})
    with pytest.raises(ConfigError, match="runtime kserve serves the model from a signed "
                                          "modelcar"):
        world.promote("2")
    assert world.provider.proposals == [] and world.images.calls == []


# ============================================================ policy, invalid intent, names

def test_policy_denial_tags_mlflow_and_opens_nothing(world: World) -> None:
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "validation_status": "failed",
                                    "deploy.resources.gpu.count": "1",
                                    "deploy.resources.gpu.type": "nvidia-h100"})
    steps = MemorySteps()
    with pytest.raises(PolicyDenied) as denied:
        world.promote("4", steps=steps)
    assert [reason.split(":")[0] for reason in denied.value.reasons] == [
        "tag validation_status", "gpu type"]
    tags = world.registry.tags(MODEL, "4")
    assert tags["promoter.production.status"] == "denied"
    assert tags["promoter.production.reason"] == "; ".join(denied.value.reasons)
    assert (world.provider.proposals, world.images.calls, world.ledger.rows) == ([], [], {})
    assert steps.results["policy"] == {"version": "4", "allowed": False,
                                       "reasons": denied.value.reasons}


def test_gpu_types_are_checked_per_environment(world: World) -> None:
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "deploy.resources.gpu.count": "1",
                                    "deploy.resources.gpu.type": "nvidia-h100"})
    assert world.promote("4", env="staging").status == "mr_opened"
    with pytest.raises(PolicyDenied):
        world.promote("4", env="production")


def test_invalid_intent_is_permanent_and_tags_mlflow(world: World) -> None:
    world.registry.add(MODEL, "4", {"validation_status": "passed",
                                    "deploy.resources.memory": "lots"})
    with pytest.raises(PermanentError) as failed:
        world.promote("4")
    assert "spec.owner" in failed.value.message and "spec.resources.memory" in failed.value.message
    assert "deploy.*" in (failed.value.hint or "")
    tags = world.registry.tags(MODEL, "4")
    assert tags["promoter.production.status"] == "invalid"
    assert tags["promoter.production.reason"] == failed.value.message
    assert world.provider.proposals == [] and world.images.calls == []


class _LastAttempt(MemorySteps):
    def ends_job(self, error: BaseException) -> bool:
        return outcome_for_error(error, MAX_ATTEMPTS, MAX_ATTEMPTS).state == DEAD


def test_the_last_attempt_of_a_transient_failure_tags_mlflow_failed(world: World) -> None:
    """A job parked after its last retry must not leave MLflow showing the status before."""
    world.provider.lost_answers = 2
    with pytest.raises(TransientError):
        world.promote("2")                       # a retry follows: nothing tagged yet
    assert "promoter.production.status" not in world.registry.tags(MODEL, "2")
    steps = _LastAttempt()
    with pytest.raises(TransientError):
        world.promote("2", steps=steps)
    tags = world.registry.tags(MODEL, "2")
    assert tags["promoter.production.status"] == "failed"
    assert tags["promoter.production.reason"] == "gave up retrying: the forge answered 502"
    assert steps.side_effects[-1] == "failed-status write-back"


def test_a_policy_denial_on_the_last_attempt_stays_denied(world: World) -> None:
    world.registry.add(MODEL, "4", {**INTENT_TAGS, "validation_status": "failed"})
    with pytest.raises(PolicyDenied):
        world.promote("4", steps=_LastAttempt())
    assert world.registry.tags(MODEL, "4")["promoter.production.status"] == "denied"


def test_a_bug_on_the_last_attempt_tags_failed_without_its_text(world: World) -> None:
    """A bug is retried until the last attempt like a transient error; its message may quote
    anything it handled, so MLflow gets its type and the logs keep the rest."""
    def crash(proposal: Any) -> Any:
        raise KeyError("s3cret-token-in-a-dict")

    world.provider.propose = crash  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        world.promote("2", steps=_LastAttempt())
    tags = world.registry.tags(MODEL, "2")
    assert tags["promoter.production.status"] == "failed"
    assert tags["promoter.production.reason"] == \
        "gave up retrying: unexpected KeyError (see promoter's logs)"


def test_a_worker_that_lost_the_job_writes_no_failed_status(world: World) -> None:
    class _LostOnLastAttempt(_LastAttempt):
        def before_side_effect(self, what: str) -> None:
            super().before_side_effect(what)
            if what == "failed-status write-back":
                raise TransientError("lease lost")

    world.provider.lost_answers = 1
    with pytest.raises(TransientError, match="502"):
        world.promote("2", steps=_LostOnLastAttempt())
    assert "promoter.production.status" not in world.registry.tags(MODEL, "2")


def test_two_models_deriving_one_deployment_name_are_refused(world: World) -> None:
    world.promote("2")
    first_tree = dict(world.provider.branches[f"promote/{NAME}/production"])
    world.registry.add("fraud_detector", "1")
    with pytest.raises(PermanentError, match="both become deployment 'fraud-detector'"):
        world.promote("1", model="fraud_detector")
    tags = world.registry.tags("fraud_detector", "1")
    assert tags["promoter.production.status"] == "invalid"
    assert "deploy.name" in tags["promoter.production.reason"]
    assert len(world.provider.proposals) == 1
    assert world.provider.branches[f"promote/{NAME}/production"] == first_tree
    assert world.ledger.get("fraud_detector", "production") is None


def test_a_distinct_deploy_name_resolves_the_clash(world: World) -> None:
    world.promote("2")
    world.registry.add("fraud_detector", "1", {**INTENT_TAGS, "deploy.name": "fraud-v2"})
    result = world.promote("1", model="fraud_detector")
    assert result.name == "fraud-v2" and result.outcome == "created"


# ============================================================ write-back and MR facts

def test_write_back_values_after_an_mr_is_opened(world: World) -> None:
    result = world.promote("2")
    assert world.registry.writes == [(MODEL, "2", "production", {
        "status": "mr_opened", "reason": "", "mr_url": "https://git.test/mr/1",
        "image": result.image})]
    assert result.image.startswith(f"registry.test/models/{NAME}@sha256:")
    assert world.ledger.get(MODEL, "production") == DeployedState(
        MODEL, "production", NAME, "2", "mr_opened", 1, result.head_sha)
    assert [step for step, _ in world.progress] == [
        "resolve", "policy", "image", "sign", "render", "merge request", "write-back"]


def test_write_back_says_merged_when_the_target_already_holds_it(world: World) -> None:
    first = world.promote("2")
    world.provider.merge(first.mr_iid)
    again = world.run(requested="2")
    assert (again.outcome, again.status, again.mr_iid) == ("unchanged", "merged", None)
    assert world.registry.tags(MODEL, "2")["promoter.production.status"] == "merged"


def test_merge_request_facts(world: World) -> None:
    production = world.promote("2")
    staging = world.promote("2", env="staging")
    proposal = world.provider.proposals[0]
    assert proposal.branch == f"promote/{NAME}/production"
    assert proposal.target_branch == "main"
    assert proposal.labels == ("promoter", "env::production", "team::risk")
    assert (proposal.approvals_required, proposal.auto_merge) == (2, False)
    assert proposal.managed_prefixes == (f"deploy/{NAME}/base/",
                                         f"deploy/{NAME}/overlays/production/")
    assert set(proposal.files) == {
        f"deploy/{NAME}/base/{f}" for f in ("inferenceservice.yaml", "kustomization.yaml",
                                            "poddisruptionbudget.yaml", "servicemonitor.yaml")} | {
        f"deploy/{NAME}/overlays/production/{f}" for f in ("kustomization.yaml",
                                                           "patch-inferenceservice.yaml")}
    assert proposal.title == "Promote Fraud Detector version 2 to production"
    digest = production.image.split("@")[1]
    hex_digest = digest.removeprefix("sha256:")  # the MR text escapes the ':' after sha256
    for fact in (hex_digest, "[run2](https://mlflow.test/#/runs/run2)", "| auc | 0\\.91 |",
                 "**Required approvals:** 2", "pass: tag validation\\_status"):
        assert fact in proposal.description
    # A kserve overlay runs the modelcar the pipeline built and signed: exactly that digest.
    patch = YAML(typ="safe", pure=True).load(world.provider.branches[proposal.branch][
        f"deploy/{NAME}/overlays/production/patch-inferenceservice.yaml"])
    assert patch["spec"]["predictor"]["model"]["storageUri"] == \
        f"oci://registry.test/models/{NAME}@{digest}"
    assert world.images.kinds == ["modelcar", "modelcar"]
    second = world.provider.proposals[1]
    assert second.labels == ("promoter", "env::staging", "team::risk")
    assert (second.approvals_required, second.auto_merge) == (1, True)
    assert staging.mr_iid != production.mr_iid


# ============================================================ decommission

def test_decommission_removes_only_the_overlay_while_another_env_remains(world: World) -> None:
    world.provider.merge(world.promote("2", env="staging").mr_iid)
    world.provider.merge(world.promote("2").mr_iid)
    world.registry.set_alias(MODEL, "production", None)
    result = world.run(action="decommission")
    assert result.removes == (f"deploy/{NAME}/overlays/production/",)
    world.provider.merge(result.mr_iid)
    directories = {p.rsplit("/", 1)[0] for p in world.provider.branches["main"]}
    assert directories == {f"deploy/{NAME}/base", f"deploy/{NAME}/overlays/staging"}
    mr = world.provider.get(result.mr_iid)
    assert mr.title == "Decommission Fraud Detector from production"
    assert "decommission" in mr.labels and mr.approvals_required == 2
    assert world.registry.writes[-1] == (MODEL, "2", "production", {
        "status": "decommissioning", "mr_url": mr.url})
    assert world.ledger.get(MODEL, "production").status == "decommissioning"  # type: ignore[union-attr]


def test_decommission_of_the_last_env_removes_the_base_too(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)
    world.registry.set_alias(MODEL, "production", None)
    result = world.run(action="decommission")
    assert result.removes == (f"deploy/{NAME}/overlays/production/", f"deploy/{NAME}/base/")
    assert "overlay and base" in world.provider.get(result.mr_iid).description
    world.provider.merge(result.mr_iid)
    assert world.provider.branches["main"] == {}


PLOT = b"\x89PNG\r\n\x1a\n-forecast"   # as `promoter forecast --propose` commits it


def _plots(world: World, ref: str = "main") -> set[str]:
    return {p for p in world.provider.branches[ref] if p.endswith(".png")}


def test_promotions_leave_the_forecast_plot_and_decommission_removes_its_env_plot(
        world: World) -> None:
    world.provider.merge(world.promote("2", env="staging").mr_iid)
    world.provider.merge(world.promote("2").mr_iid)
    plots = {f"deploy/{NAME}/forecast-{env}.png" for env in ("staging", "production")}
    world.provider.branches["main"].update(dict.fromkeys(plots, PLOT))   # scale MRs merged
    # A new version re-renders base/ and the overlay; the plot beside them stays as it is.
    promoted = world.promote("3")
    assert _plots(world, f"promote/{NAME}/production") == plots
    world.provider.merge(promoted.mr_iid)

    world.registry.set_alias(MODEL, "production", None)
    result = world.run(action="decommission")
    assert world.provider.proposals[-1].files == {f"deploy/{NAME}/forecast-production.png": None}
    world.provider.merge(result.mr_iid)
    assert _plots(world) == {f"deploy/{NAME}/forecast-staging.png"}
    assert world.provider.branches["main"][f"deploy/{NAME}/forecast-staging.png"] == PLOT
    # The MR sweep records that merge; until then production's removal is under way, and a
    # decommission of staging keeps the base (as GC does: its removal MR may yet be closed).
    world.ledger.put(dataclasses.replace(world.ledger.rows[(MODEL, "production")],
                                         status="decommissioned"))

    world.registry.set_alias(MODEL, "staging", None)      # the last environment goes
    world.provider.merge(world.run(env="staging", action="decommission").mr_iid)
    assert world.provider.branches["main"] == {}          # nothing of the model is left


def test_decommission_skipped_when_the_alias_points_somewhere_again(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)
    world.registry.set_alias(MODEL, "production", "3")
    proposals = len(world.provider.proposals)
    result = world.run(action="decommission")
    assert result.skipped and "version 3 again" in result.reason
    assert len(world.provider.proposals) == proposals


def test_decommission_skipped_when_promoter_never_deployed_it(world: World) -> None:
    result = world.run(action="decommission")
    assert result.skipped
    assert result.reason == f"promoter has no deployment of {MODEL!r} in production"
    assert world.provider.proposals == [] and world.registry.writes == []


# ============================================================ accepted KEDA scaling

# What `promoter forecast --propose` writes for the default (kserve) platform: KEDA scales
# KServe's predictor Deployment.
SCALED_OBJECT = """\
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: fraud-detector
spec:
  scaleTargetRef:
    name: fraud-detector-predictor
  minReplicaCount: 1
  maxReplicaCount: 12
  triggers:
  - type: cron
    name: prewarm-mo-0800
    metadata:
      timezone: Europe/Berlin
      start: 0 8 * * 1
      end: 0 18 * * 1
      desiredReplicas: '9'
"""


def _accept_scaling(world: World, env: str = "production") -> str:
    """What a merged `promoter forecast --propose` MR leaves on the target branch."""
    path = f"deploy/{NAME}/overlays/{env}/scaledobject.yaml"
    world.provider.branches["main"][path] = SCALED_OBJECT
    return path


def test_a_promotion_keeps_the_accepted_scaled_object_bounded_by_the_intent(world: World) -> None:
    world.provider.merge(world.promote("2").mr_iid)
    path = _accept_scaling(world)
    result = world.promote("3")
    tree = world.provider.branches[f"promote/{NAME}/production"]
    # The default intent allows 1..2 replicas: the schedule is kept, its bounds are the intent's.
    assert tree[path] == SCALED_OBJECT.replace("maxReplicaCount: 12", "maxReplicaCount: 2") \
        .replace("desiredReplicas: '9'", "desiredReplicas: '2'")
    kustomization = overlay(world)
    assert "- scaledobject.yaml" in kustomization
    # The default runtime is KServe: the predictor is handed to the external autoscaler.
    assert "- path: patch-inferenceservice.yaml" in kustomization
    assert "- path: patch-inferenceservice-autoscaler.yaml" in kustomization
    assert "serving.kserve.io/autoscalerClass: external" in \
        tree[f"deploy/{NAME}/overlays/production/patch-inferenceservice-autoscaler.yaml"]
    assert result.outcome == "created"


def test_an_accepted_scaled_object_without_a_minimum_gets_the_intents(world: World) -> None:
    """Left out, KEDA's minReplicaCount is 0: the carried-forward schedule scaled the model
    to zero outside its cron windows, though the intent says minReplicas 1."""
    world.provider.merge(world.promote("2").mr_iid)
    path = _accept_scaling(world)
    world.provider.branches["main"][path] = SCALED_OBJECT.replace("  minReplicaCount: 1\n", "")
    world.promote("3")
    scaled = world.provider.branches[f"promote/{NAME}/production"][path]
    assert "spec:\n  minReplicaCount: 1\n  scaleTargetRef:" in scaled
    assert "maxReplicaCount: 2\n" in scaled


def test_an_accepted_scaled_object_loses_an_idle_replica_count(world: World) -> None:
    """A reviewer's idleReplicaCount: 0 was carried forward: KEDA scaled the model to zero
    whenever no trigger was active, below the intent's minReplicas 1."""
    world.provider.merge(world.promote("2").mr_iid)
    path = _accept_scaling(world)
    world.provider.branches["main"][path] = SCALED_OBJECT.replace(
        "  minReplicaCount: 1\n", "  idleReplicaCount: 0  # nights\n  minReplicaCount: 1\n")
    world.promote("3")
    scaled = world.provider.branches[f"promote/{NAME}/production"][path]
    assert "idleReplicaCount" not in scaled
    assert "    name: fraud-detector-predictor\n  minReplicaCount: 1\n" in scaled


def test_without_an_accepted_scaled_object_kserve_keeps_its_autoscaler(world: World) -> None:
    _accept_scaling(world, env="staging")   # another environment's schedule is not this one's
    world.promote("2")
    kustomization = overlay(world)
    assert "scaledobject.yaml" not in kustomization
    assert "autoscaler" not in kustomization
