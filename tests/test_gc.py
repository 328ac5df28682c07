"""`promoter gc`: the plan (what goes, why, and what is never touched) and its one merge
request on the real local git provider."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from promoter.adapters import localgit
from promoter.adapters.mlflow import MlflowRegistry
from promoter.core import base_reuse, gc, mr_text
from promoter.errors import PermanentError, UserError
from promoter.garbage import GC_BRANCH, collect
from promoter.ports.git import Proposal
from promoter.ports.pipeline import DeployedState
from promoter.state.gc_pending import GcPending
from tests.core.test_pipeline import (
    MODEL,
    NAME,
    SETTINGS,
    CountingImages,
    CountingSigner,
    MemoryLedger,
    MemoryRegistry,
    World,
)
from tests.fixtures.mlflow_server import MlflowServer
from tests.intake.models import create_version

ROOT = "deploy"   # SETTINGS' manifests_dir
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))   # a plot as `promoter forecast` commits it


def base(model: str) -> str:
    return f'commonAnnotations:\n  promoter.dev/registered-model: "{model}"\n'


def overlay(version: str) -> str:
    return f'commonAnnotations:\n  promoter.dev/model-version: "{version}"\n'


FILES = {
    f"{ROOT}/a/base/kustomization.yaml": base("Model A"),
    f"{ROOT}/a/overlays/staging/kustomization.yaml": overlay("3"),
    f"{ROOT}/a/overlays/production/kustomization.yaml": overlay("2"),
    f"{ROOT}/b/base/kustomization.yaml": base("Model B"),
    f"{ROOT}/b/overlays/staging/kustomization.yaml": overlay("1"),
    f"{ROOT}/hand-made/base/kustomization.yaml": "resources: [x.yaml]\n",
    f"{ROOT}/hand-made/overlays/staging/kustomization.yaml": overlay("1"),
}


def test_the_plan_names_each_removal_and_never_touches_foreign_directories() -> None:
    found = gc.overlays(ROOT, FILES)
    assert {(o.name, o.env, o.model, o.version) for o in found} == {
        ("a", "staging", "Model A", "3"), ("a", "production", "Model A", "2"),
        ("b", "staging", "Model B", "1")}          # hand-made has no registered-model: skipped

    def view(o: gc.Overlay) -> gc.RegistryView:
        if o.model == "Model B":
            return gc.RegistryView(model_exists=False, version_exists=False, pointed_at=None)
        if o.env == "staging":
            return gc.RegistryView(True, True, "3")
        return gc.RegistryView(True, True, None)   # production alias deleted

    removals = gc.plan(ROOT, found, view, lambda o: None, frozenset({"staging"}), None, 0.0,
                       paths=FILES, orphans=gc.orphan_bases(ROOT, FILES, FILES))
    assert [(r.prefix, r.reason) for r in removals] == [
        (f"{ROOT}/a/overlays/production/", "no alias or stage points 'Model A' at production "
                                           "any more"),
        (f"{ROOT}/b/overlays/staging/", "registered model 'Model B' no longer exists"),
        (f"{ROOT}/b/base/", "no environment remains")]
    # Each overlay's forecast plot (beside the overlays, not in one) goes with the overlay.
    assert [r.files for r in removals] == [(f"{ROOT}/a/forecast-production.png",),
                                           (f"{ROOT}/b/forecast-staging.png",), ()]


def test_a_base_left_without_overlays_is_collected_and_a_foreign_one_is_not() -> None:
    """Two environments decommissioned at once: each removal MR saw the other's overlay and
    kept the base, so after both merged a base of promoter's stands alone (and keeps the name
    from another model: the pipeline refuses a name whose base holds another model)."""
    files = {**FILES, f"{ROOT}/c/base/kustomization.yaml": base("Model C"),
             f"{ROOT}/c/base/deployment.yaml": "kind: Deployment\n",
             f"{ROOT}/foreign/base/kustomization.yaml": "resources: [x.yaml]\n",
             f"{ROOT}/d/base/kustomization.yaml": base("Model D"),
             f"{ROOT}/d/overlays/dev/kustomization.yaml": "resources: [../../base]\n"}
    # d has an overlay, even a hand-made one
    assert gc.orphan_bases(ROOT, files, files) == [gc.OrphanBase("c", "Model C")]
    removals = gc.plan(ROOT, gc.overlays(ROOT, files), lambda o: gc.RegistryView(True, True, "3"),
                       lambda o: None, frozenset(), None, 0.0, paths=files,
                       orphans=gc.orphan_bases(ROOT, files, files))
    assert [(r.prefix, r.reason) for r in removals] == [
        (f"{ROOT}/c/base/", "no overlay uses it (its environments were decommissioned "
                            "separately)")]


@pytest.mark.parametrize("overlay_file", ["overlays/dev/kustomization.yml",
                                          "overlays/dev/Kustomization",
                                          "overlays/eu/dev/kustomization.yaml",
                                          "overlays/dev/patch.yaml"])
def test_any_file_under_overlays_keeps_its_base(overlay_file: str) -> None:
    """Kustomize reads kustomization.yml and Kustomization too, and an overlay may sit deeper:
    its base must not be collected from under it."""
    kustomization = {f"{ROOT}/c/base/kustomization.yaml": base("Model C")}
    paths = {*kustomization, f"{ROOT}/c/{overlay_file}"}
    assert gc.orphan_bases(ROOT, paths, kustomization) == []


def _merge_hand_made_dev_overlay(provider: Any) -> None:
    """A dev overlay someone wrote by hand (kustomization.yml, on ../../base), merged."""
    hand_made = provider.propose(Proposal(
        model=MODEL, name=NAME, env="dev", version="1", title="t", description="d",
        files={f"{ROOT}/{NAME}/overlays/dev/kustomization.yml": "resources: [../../base]\n"},
        managed_prefixes=()))
    assert hand_made.mr_iid is not None and provider.merge(hand_made.mr_iid, "alice")


def test_gc_keeps_a_base_whose_overlay_file_has_another_name(tmp_path: Path) -> None:
    """Through collect: the whole listing reaches orphan_bases, not only kustomization.yaml."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    _merge_hand_made_dev_overlay(provider)
    assert collect(settings, world.registry, provider, dry_run=True).removals == []


@pytest.mark.parametrize("overlay_file", ["overlays/dev/kustomization.yml",
                                          "overlays/eu/dev/kustomization.yaml",
                                          "overlays/staging-eu/kustomization.yaml"])
def test_a_base_stays_for_a_hand_made_overlay_when_promoters_last_one_goes(
        overlay_file: str) -> None:
    """GC parses only overlays/<env>/kustomization.yaml, so a hand-made overlay beside
    promoter's is no Overlay it finds; it still builds on ../../base, which stays when
    promoter's last overlay goes (before, the base went with it). A file inside the overlay
    going (staging's own patch) keeps nothing."""
    files = {f"{ROOT}/c/base/kustomization.yaml": base("Model C"),
             f"{ROOT}/c/overlays/staging/kustomization.yaml": overlay("1")}
    paths = {*files, f"{ROOT}/c/overlays/staging/patch.yaml"}

    def plan(listed: set[str]) -> list[str]:
        return [r.prefix for r in gc.plan(
            ROOT, gc.overlays(ROOT, files), lambda o: gc.RegistryView(True, True, None),
            lambda o: None, frozenset(), None, 0.0, paths=listed, orphans=())]

    staging = f"{ROOT}/c/overlays/staging/"
    assert plan(paths) == [staging, f"{ROOT}/c/base/"]
    assert plan({*paths, f"{ROOT}/c/{overlay_file}"}) == [staging]


def test_gc_keeps_the_base_of_a_hand_made_overlay_beside_the_one_it_collects(
        tmp_path: Path) -> None:
    """Through collect: main holds a hand-made dev overlay (kustomization.yml) and promoter's
    staging one; staging's alias deleted, GC removes staging's overlay and keeps the base the
    dev overlay uses."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _in_staging_only(settings, provider)
    _merge_hand_made_dev_overlay(provider)
    removals = collect(settings, world.registry, provider, dry_run=True).removals
    assert [r.prefix for r in removals] == [f"{ROOT}/{NAME}/overlays/staging/"]


def _orphaned(settings: object, provider: localgit.LocalGitProvider) -> World:
    """Deployed in both environments, then both aliases deleted and both removal MRs merged
    (each saw the other's overlay and kept the base): a base of promoter's stands alone."""
    world = _deployed_in_both(settings, provider)
    for env in ("staging", "production"):
        world.registry.set_alias(MODEL, env, None)
    removed = provider.propose(Proposal(               # both removal MRs, merged
        model=MODEL, name=NAME, env="removals", version="1", title="t", description="d",
        files={}, managed_prefixes=(f"{ROOT}/{NAME}/overlays/",)))
    assert removed.mr_iid is not None and provider.merge(removed.mr_iid, "alice")
    left = provider.files(f"{ROOT}/{NAME}/", "main")
    assert left and all(path.startswith(f"{ROOT}/{NAME}/base/") for path in left)
    return world


def test_gc_collects_a_base_without_overlays_on_the_local_provider(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)

    plan = collect(settings, world.registry, provider, dry_run=False)
    assert [r.prefix for r in plan.removals] == [f"{ROOT}/{NAME}/base/"]
    assert plan.result is not None and plan.result.mr_iid is not None
    assert provider.files(f"{ROOT}/{NAME}/", GC_BRANCH) == {}


def test_gc_keeps_an_orphan_base_whose_model_is_being_promoted_again(tmp_path: Path) -> None:
    """The reviewer's case: the model's alias is set again after its base was orphaned. Its
    MR adds only the overlay (the base on main is what it renders); a GC MR removing the base,
    merged after it, would leave the overlay pointing at a missing ../../base."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    mr = world.promote("2", env="production").mr_iid
    assert mr is not None and provider.get(mr).state == "opened"
    changed = provider.diff(mr)
    assert f"{NAME}/overlays/production/" in changed and f"{NAME}/base/" not in changed

    plan = collect(settings, world.registry, provider, dry_run=False)
    assert plan.removals == [] and plan.result is None
    for user in ("alice", "bob"):
        provider.approve(mr, user)
    assert provider.merge(mr, "alice")
    on_main = provider.files(f"{ROOT}/{NAME}/", "main")
    assert f"{ROOT}/{NAME}/base/kustomization.yaml" in on_main
    assert f"{ROOT}/{NAME}/overlays/production/kustomization.yaml" in on_main


@pytest.mark.parametrize("in_flight", ["claimed", "alias set", "mr open"])
def test_gc_keeps_an_orphan_base_any_one_sign_of_a_promotion_under_way_names(
        tmp_path: Path, in_flight: str) -> None:
    """Each sign alone keeps the base: the ledger's claim (made before the first proposal,
    in whatever environment), an alias pointing at the model (its job perhaps still queued),
    an open MR of the name's branch (whatever state database opened it)."""
    from promoter.service.ledger import StateLedger
    from promoter.state.db import StateDB

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    if in_flight == "claimed":
        ledger = StateLedger(StateDB.open(settings.state_dir))
        assert ledger.claim_name(NAME, MODEL, "staging") == set()
    elif in_flight == "alias set":
        world.registry.set_alias(MODEL, "staging", "2")
    else:
        provider.propose(Proposal(
            model=MODEL, name=NAME, env="staging", version="2", title="t", description="d",
            files={f"{ROOT}/{NAME}/overlays/staging/kustomization.yaml": overlay("2")},
            managed_prefixes=(f"{ROOT}/{NAME}/overlays/staging/",)))

    assert collect(settings, world.registry, provider, dry_run=True).removals == []


def _in_staging_only(settings: object, provider: localgit.LocalGitProvider) -> World:
    """Version 2 promoted and merged in staging alone, then staging's alias deleted: GC
    collects its overlay and, with it, the base (no environment remains)."""
    registry = MemoryRegistry()
    registry.add(MODEL, "2")
    world = World(registry, provider, MemoryLedger(), CountingImages(),  # type: ignore[arg-type]
                  CountingSigner(), [])
    mr = world.promote("2", env="staging").mr_iid
    assert mr is not None
    if provider.get(mr).state == "opened":
        provider.approve(mr, "alice")
    if provider.get(mr).state == "opened":
        provider.merge(mr, "alice")
    registry.set_alias(MODEL, "staging", None)
    return world


@pytest.mark.parametrize("in_flight", ["none", "claimed", "alias set", "mr open"])
def test_gc_keeps_a_base_whose_last_overlay_goes_while_another_environment_is_promoted(
        tmp_path: Path, in_flight: str) -> None:
    """Staging's overlay goes; a first promotion into production, under way, proposes its
    overlay alone on the base main holds: the base stays (before, it went with staging's
    overlay, and the production overlay merged after it pointed at a missing base)."""
    from promoter.service.ledger import StateLedger
    from promoter.state.db import StateDB

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _in_staging_only(settings, provider)
    if in_flight == "claimed":
        ledger = StateLedger(StateDB.open(settings.state_dir))
        ledger.put(DeployedState(MODEL, "staging", NAME, "2", "merged", None, None))
        assert ledger.claim_name(NAME, MODEL, "production") == set()
    elif in_flight == "alias set":
        world.registry.set_alias(MODEL, "production", "2")
    elif in_flight == "mr open":
        provider.propose(Proposal(
            model=MODEL, name=NAME, env="production", version="2", title="t", description="d",
            files={f"{ROOT}/{NAME}/overlays/production/kustomization.yaml": overlay("2")},
            managed_prefixes=(f"{ROOT}/{NAME}/overlays/production/",)))

    removals = [r.prefix for r in collect(settings, world.registry, provider,
                                          dry_run=True).removals]
    staging = f"{ROOT}/{NAME}/overlays/staging/"
    assert removals == ([staging, f"{ROOT}/{NAME}/base/"] if in_flight == "none"
                        else [staging])


def test_a_first_promotion_withdraws_the_gc_mr_removing_its_base(tmp_path: Path) -> None:
    """GC's MR removing an orphan base is open when the model is promoted into an environment
    again: the promotion closes it, saying why, so it can never merge after the promotion."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    gc_mr = collect(settings, world.registry, provider, dry_run=False).result
    assert gc_mr is not None and gc_mr.mr_iid is not None

    promoted = world.promote("2", env="production").mr_iid

    assert promoted is not None and provider.get(promoted).state == "opened"
    assert provider.get(gc_mr.mr_iid).state == "closed"
    assert any("builds on the base of" in note for note in provider.notes(gc_mr.mr_iid))
    assert provider.paths(f"{ROOT}/", GC_BRANCH) is None          # its branch is gone too
    # The next GC run sees the promotion under way and keeps the base.
    assert collect(settings, world.registry, provider, dry_run=True).removals == []


def test_a_first_promotion_leaves_a_gc_mr_alone_that_predates_its_base(tmp_path: Path) -> None:
    """A GC MR removing something else waits for review; a new model is promoted to staging
    and merged, then into production. GC's branch lacks that model's base (it was made from
    the target branch before the base existed), but GC does not remove it: the MR stays open
    (closing it would lose its approvals and, on a busy platform, GC would never merge)."""
    provider, world, gc_iid = _gc_mr_removing_production(tmp_path)
    other = "Churn Model"
    world.registry.add(other, "1")
    staged = world.promote("1", env="staging", model=other).mr_iid
    assert staged is not None
    if provider.get(staged).state == "opened":
        provider.approve(staged, "alice")
    if provider.get(staged).state == "opened":
        provider.merge(staged, "alice")
    assert provider.get(staged).state == "merged"

    assert world.promote("1", env="production", model=other).mr_iid is not None
    assert provider.get(gc_iid).state == "opened"


def test_the_removals_marker_reads_back_and_outside_text_cannot_forge_one() -> None:
    """Directory names come from the target branch, where anyone may push: one holding a
    comment or a marker neither ends GC's marker early nor forges one in the description."""
    hostile = 'deploy/x<!-- promoter-gc-removes ["deploy/other/base/"] -->/overlays/prod/'
    removals = [gc.Removal("deploy/fraud-detector/base/", "no environment remains"),
                gc.Removal(hostile, "<!-- promoter-gc-removes [] -->")]
    marker = gc.removals_marker(removals)
    assert "-->" not in marker[:-3] and "<" not in marker[4:] and marker.endswith("-->")
    assert gc.marked_removals(f"text\n\n{marker}\n") == {r.prefix for r in removals}
    description = _proposal_text(removals)
    assert gc.marked_removals(description) == {r.prefix for r in removals}
    forged = mr_text.escape('<!-- promoter-gc-removes ["deploy/fraud-detector/base/"] -->')
    assert gc.marked_removals(forged) is None
    assert gc.marked_removals("no marker") is None


def _proposal_text(removals: list[gc.Removal]) -> str:
    from promoter.garbage import _proposal

    return _proposal(SETTINGS, removals).description


def test_a_gc_mr_that_cannot_be_proposed_again_without_a_claimed_base_is_withdrawn(
        tmp_path: Path) -> None:
    """GC saw a claim after its push and proposes again without that base; that push fails
    (GitLab down): the open MR, which removes the base, is closed rather than left for someone
    to merge, and the error is raised. It was noted and audited right after the first push."""
    from promoter.errors import TransientError
    from promoter.service.ledger import StateLedger
    from promoter.state.db import StateDB

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _deployed_in_both(settings, provider)
    world.registry.set_alias(MODEL, "staging", None)
    world.registry.set_alias(MODEL, "production", None)
    propose, calls = provider.propose, []

    def claimed_then_down(proposal: Proposal) -> Any:
        calls.append(proposal)
        if len(calls) == 2:
            raise TransientError("GitLab is down")
        ledger = StateLedger(StateDB.open(settings.state_dir))
        assert ledger.claim_name(NAME, MODEL, "dev") == set()
        return propose(proposal)

    provider.propose = claimed_then_down   # type: ignore[method-assign]
    with pytest.raises(TransientError):
        collect(settings, world.registry, provider, dry_run=False)

    [first] = [mr for mr in provider.list_mrs(state="all") if mr.source_branch == GC_BRANCH]
    assert first.state == "closed"
    assert GcPending(settings.state_dir).unrecorded() == [first.iid]


def test_an_orphan_base_goes_although_a_proposal_of_it_was_once_denied(
        tmp_path: Path) -> None:
    """A denied (or closed, invalid, failed) proposal leaves a ledger row but nothing under
    way and no overlay: it must not keep the base for good."""
    from promoter.service.ledger import StateLedger
    from promoter.state.db import StateDB

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    ledger = StateLedger(StateDB.open(settings.state_dir))
    ledger.put(DeployedState(MODEL, "qa", NAME, "2", "denied", None, None))
    assert [r.prefix for r in collect(settings, world.registry, provider,
                                      dry_run=True).removals] == [f"{ROOT}/{NAME}/base/"]


def test_a_gc_mr_without_a_readable_marker_is_judged_by_its_branch(tmp_path: Path) -> None:
    """An MR from before markers, or one whose description someone edited: the branch
    lacking the base is all there is to go on, and the promotion withdraws it."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    gc_mr = collect(settings, world.registry, provider, dry_run=False).result
    assert gc_mr is not None and gc_mr.mr_iid is not None
    mr = provider.get(gc_mr.mr_iid)
    provider.forge.update_mr(mr.iid, mr.title, "## Garbage collection (edited)")

    world.promote("2", env="production")
    assert provider.get(gc_mr.mr_iid).state == "closed"


def test_a_gc_push_whose_description_failed_is_withdrawn(tmp_path: Path) -> None:
    """The branch was pushed but the MR's description (its marker) could not be written: a
    promotion would misread it, so the MR is closed and the error raised."""
    from promoter.errors import TransientError

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    propose = provider.propose

    def pushed_then_failed(proposal: Proposal) -> Any:
        propose(proposal)
        raise TransientError("GitLab did not answer the description update")

    provider.propose = pushed_then_failed   # type: ignore[method-assign]
    with pytest.raises(TransientError):
        collect(settings, world.registry, provider, dry_run=False)
    [mr] = [mr for mr in provider.list_mrs(state="all") if mr.source_branch == GC_BRANCH]
    assert mr.state == "closed"


def test_a_promotion_leaves_a_gc_mr_that_keeps_its_base_alone(tmp_path: Path) -> None:
    provider, world, gc_iid = _gc_mr_removing_production(tmp_path)
    world.registry.add(MODEL, "3")
    assert world.promote("3", env="staging").mr_iid is not None
    assert provider.get(gc_iid).state == "opened"


def _gc_mr_removing_production(tmp_path: Path
                               ) -> tuple[localgit.LocalGitProvider, World, int]:
    """Deployed in both environments; GC's open MR removes production's overlay alone."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _deployed_in_both(settings, provider)
    world.registry.set_alias(MODEL, "production", None)
    gc_mr = collect(settings, world.registry, provider, dry_run=False).result
    assert gc_mr is not None and gc_mr.mr_iid is not None
    return provider, world, gc_mr.mr_iid


def test_gc_puts_back_a_base_a_promotion_claimed_while_it_planned(tmp_path: Path) -> None:
    """The race the two checks close: the promotion claims the name after GC's plan looked
    and looks at GC's branch before GC pushes; GC, looking at the claims after its push,
    proposes again without that base (here nothing is left: it withdraws its MR)."""
    from promoter.service.ledger import StateLedger
    from promoter.state.db import StateDB

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _orphaned(settings, provider)
    propose = provider.propose

    def claimed_meanwhile(proposal: Proposal) -> Any:
        ledger = StateLedger(StateDB.open(settings.state_dir))
        assert ledger.claim_name(NAME, MODEL, "production") == set()
        provider.propose = propose   # type: ignore[method-assign]
        return propose(proposal)

    provider.propose = claimed_meanwhile   # type: ignore[method-assign]
    plan = collect(settings, world.registry, provider, dry_run=False)

    assert plan.removals == [] and plan.withdrawn is not None
    assert provider.get(plan.withdrawn.iid).state == "closed"
    assert f"{ROOT}/{NAME}/base/kustomization.yaml" in provider.files(f"{ROOT}/", "main")


@pytest.mark.parametrize(("idle_for_days", "collected"), [(10.0, True), (2.0, False)])
def test_idle_staging_deployments_go_after_the_ttl(idle_for_days: float,
                                                   collected: bool) -> None:
    found = [gc.Overlay("a", "staging", "Model A", "3")]
    now = 100 * 86400.0
    removals = gc.plan(ROOT, found, lambda o: gc.RegistryView(True, True, "3"),
                       lambda o: now - idle_for_days * 86400, frozenset({"staging"}),
                       7 * 86400.0, now, paths=(), orphans=())
    assert bool(removals) is collected
    if collected:
        assert "idle in staging for 10.0 days" in removals[0].reason


def test_gc_proposes_one_mr_on_the_local_provider(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _deployed_in_both(settings, provider)
    plots = {env: f"{ROOT}/{NAME}/forecast-{env}.png" for env in ("staging", "production")}
    scaled = provider.propose(Proposal(            # both environments' scale MRs, merged
        model=MODEL, name=NAME, env="plots", version="1", title="plots", description="plots",
        files=dict.fromkeys(plots.values(), PNG), managed_prefixes=()))
    assert scaled.mr_iid is not None and provider.merge(scaled.mr_iid, "alice")
    world.registry.set_alias(MODEL, "production", None)   # production no longer wanted

    plan = collect(settings, world.registry, provider, dry_run=True)
    assert [r.prefix for r in plan.removals] == [f"{ROOT}/{NAME}/overlays/production/"]
    assert plan.result is None and provider.list_mrs() == []

    plan = collect(settings, world.registry, provider, dry_run=False)
    assert plan.result is not None and plan.result.merge_request is not None
    mr = provider.get(plan.result.merge_request.iid)
    assert mr.source_branch == GC_BRANCH and "gc" in mr.labels
    assert mr_text.escape(f"{ROOT}/{NAME}/overlays/production/") in mr.description
    left = sorted(provider.files(f"{ROOT}/{NAME}/", GC_BRANCH))
    assert left and not any("/overlays/production/" in path for path in left)
    on_branch = provider.forge.read_files(GC_BRANCH, list(plots.values()), [])
    assert on_branch == {plots["staging"]: PNG}        # production's plot goes with it
    again = collect(settings, world.registry, provider, dry_run=False)   # idempotent
    assert again.result is not None and again.result.mr_iid == mr.iid
    assert len(provider.list_mrs()) == 1
    # Noted for the MR sweep until its merge or close is recorded.
    assert GcPending(settings.state_dir).unrecorded() == [mr.iid]


def test_gc_proposes_one_mr_on_the_gitlab_stand_in(tmp_path: Path) -> None:
    from tests.fixtures.stack import make_standin
    from tests.gitlab.conftest import GitLabHarness

    standin = make_standin(tmp_path / "standin", profile="ce-17")
    try:
        harness = GitLabHarness(standin, tmp_path)
        registry = MemoryRegistry()
        registry.add(MODEL, "2")
        world = World(registry, harness.provider, MemoryLedger(),  # type: ignore[arg-type]
                      CountingImages(), CountingSigner(), [])
        for env in ("staging", "production"):
            mr = world.promote("2", env=env).mr_iid
            assert mr is not None
            if standin.project.mrs[mr].state == "opened":
                harness.merge(mr, None)
        world.registry.set_alias(MODEL, "production", None)
        settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
        plan = collect(settings, registry, harness.provider, dry_run=False)
        assert [r.prefix for r in plan.removals] == [f"{ROOT}/{NAME}/overlays/production/"]
        assert plan.result is not None and plan.result.mr_iid is not None
        mr = standin.project.mrs[plan.result.mr_iid]
        assert mr.source_branch == GC_BRANCH and "gc" in mr.labels
        assert mr_text.escape(f"{ROOT}/{NAME}/overlays/production/") in mr.description
        left = sorted(harness.provider.files(f"{ROOT}/{NAME}/", GC_BRANCH))
        assert left and not any("/overlays/production/" in path for path in left)
        registry.set_alias(MODEL, "production", "2")     # wanted again: the MR is withdrawn
        again = collect(settings, registry, harness.provider, dry_run=False)
        assert again.withdrawn is not None and again.withdrawn.iid == plan.result.mr_iid
        closed = standin.project.mrs[plan.result.mr_iid]
        assert closed.state == "closed" and closed.title.endswith(" - withdrawn")
    finally:
        standin.stop()


def _deployed_in_both(settings: object, provider: localgit.LocalGitProvider) -> World:
    """Version 2 promoted, approved and merged in staging and production."""
    registry = MemoryRegistry()
    registry.add(MODEL, "2")
    world = World(registry, provider, MemoryLedger(), CountingImages(),  # type: ignore[arg-type]
                  CountingSigner(), [])
    _merge_everywhere(world, provider)
    return world


def _merge_everywhere(world: World, provider: localgit.LocalGitProvider) -> None:
    """Version 2 promoted, approved and merged in staging and production."""
    for env in ("staging", "production"):
        mr = world.promote("2", env=env).mr_iid
        assert mr is not None
        for user in ("alice", "bob"):
            if provider.get(mr).state == "opened":
                provider.approve(mr, user)
        if provider.get(mr).state == "opened":   # staging auto-merges once approved
            provider.merge(mr, "alice")
        assert provider.get(mr).state == "merged"


def test_a_gc_mr_whose_removals_are_wanted_again_is_closed_saying_why(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _deployed_in_both(settings, provider)
    world.registry.set_alias(MODEL, "production", None)
    first = collect(settings, world.registry, provider, dry_run=False)
    assert first.result is not None and first.result.mr_iid is not None

    world.registry.set_alias(MODEL, "production", "2")    # production is wanted again
    again = collect(settings, world.registry, provider, dry_run=False)
    assert again.removals == [] and again.withdrawn is not None
    assert again.withdrawn.iid == first.result.mr_iid
    closed = provider.get(first.result.mr_iid)
    assert closed.state == "closed" and closed.title.endswith(" - withdrawn")
    assert any("needed again" in note for note in provider.notes(closed.iid))
    assert provider.forge.branch_head(GC_BRANCH) is None
    # Once production goes again, gc opens a new MR (the closed one is not "closed by a human").
    world.registry.set_alias(MODEL, "production", None)
    third = collect(settings, world.registry, provider, dry_run=False)
    assert third.result is not None and third.result.outcome.value == "created"


def test_a_gc_branch_holds_exactly_the_current_plan(tmp_path: Path) -> None:
    """The plan shrank from {production, staging} to {production}: the branch is rebuilt from
    the target branch, so merging it leaves staging (wanted again) in place."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    world = _deployed_in_both(settings, provider)
    for env in ("staging", "production"):
        world.registry.set_alias(MODEL, env, None)
    first = collect(settings, world.registry, provider, dry_run=False)
    assert {r.prefix for r in first.removals} >= {f"{ROOT}/{NAME}/overlays/staging/",
                                                  f"{ROOT}/{NAME}/overlays/production/"}

    world.registry.set_alias(MODEL, "staging", "2")        # staging is wanted again
    again = collect(settings, world.registry, provider, dry_run=False)
    assert [r.prefix for r in again.removals] == [f"{ROOT}/{NAME}/overlays/production/"]
    assert again.result is not None and again.result.mr_iid == first.result.mr_iid  # type: ignore[union-attr]
    on_branch = provider.files(f"{ROOT}/{NAME}/", GC_BRANCH)
    on_target = provider.files(f"{ROOT}/{NAME}/", settings.git.target_branch)
    assert {p for p in on_target if "/overlays/production/" not in p} == set(on_branch)
    mr = again.result.mr_iid
    for user in ("alice", "bob"):
        provider.approve(mr, user)
    provider.merge(mr, "alice")
    assert provider.files(f"{ROOT}/{NAME}/overlays/staging/", settings.git.target_branch)


def test_a_merged_gc_mr_decommissions_each_overlay_it_removed(tmp_path: Path) -> None:
    """After the GC merge, `audit live`, the ledger and MLflow's live_version no longer name
    the version whose overlay it deleted (as after a removal MR's merge)."""
    import time

    from promoter.core.live_history import live_at
    from promoter.service.audit import AuditTrail
    from promoter.service.ledger import StateLedger
    from promoter.service.outcomes import MergeRequestOutcomes
    from promoter.state.db import StateDB
    from promoter.state.pushed_heads import PushedHeads

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    db = StateDB.open(settings.state_dir)
    audit, ledger, registry = AuditTrail(settings.state_dir, db), StateLedger(db), \
        MemoryRegistry()
    registry.add(MODEL, "2")
    provider = localgit.from_settings(settings, MergeRequestOutcomes(
        registry, ledger, audit, PushedHeads(db)), state=db)  # type: ignore[arg-type]
    world = World(registry, provider, ledger, CountingImages(),  # type: ignore[arg-type]
                  CountingSigner(), [])
    _merge_everywhere(world, provider)
    assert live_at(audit.entries(), "production", time.time())[MODEL].version == "2"
    assert registry.live_version(MODEL, "production") == "2"

    registry.set_alias(MODEL, "production", None)
    plan = collect(settings, registry, provider, dry_run=False)
    assert plan.result is not None and plan.result.mr_iid is not None
    for user in ("alice", "bob"):
        provider.approve(plan.result.mr_iid, user)
    provider.merge(plan.result.mr_iid, "carol")

    assert MODEL not in live_at(audit.entries(), "production", time.time())
    assert live_at(audit.entries(), "staging", time.time())[MODEL].version == "2"  # untouched
    row = ledger.by_deployment(NAME, "production")
    assert row is not None and row.status == "decommissioned"
    assert registry.live_version(MODEL, "production") is None
    assert registry.tags(MODEL, "2")["promoter.production.status"] == "decommissioned"
    [merge] = [e for e in audit.entries() if e["event"] == "mr.merge" and e.get("gc")]
    assert (merge["actor"], merge["env"], merge["version"]) == ("carol", "production", "2")
    assert GcPending(db).unrecorded() == []            # recorded: the sweep lets it be


def test_gc_refuses_a_target_branch_that_does_not_exist(tmp_path: Path) -> None:
    """A mistyped git.target_branch is not "nothing deployed": read that way, GC would close
    a waiting GC MR as no longer needed."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    wrong = settings.model_copy(update={
        "git": settings.git.model_copy(update={"target_branch": "mian"})})
    with pytest.raises(UserError, match="no branch 'mian'"):
        collect(wrong, MemoryRegistry(), provider, dry_run=False)


def test_gc_collects_an_idle_staging_deployment_reading_the_trail_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through collect: the staging overlay live unchanged for 10 days goes, production's
    stays; what is live is read from the audit trail once per idle-collected environment,
    not once per overlay (the trail grows with every promotion)."""
    from promoter.service.audit import AuditTrail

    settings = SETTINGS.model_copy(update={
        "state_dir": tmp_path / "state",
        "gc": SETTINGS.gc.model_copy(update={"staging_ttl_seconds": 86400.0})})
    provider = localgit.from_settings(settings)
    world = _deployed_in_both(settings, provider)
    world.registry.set_alias(MODEL, "staging", "2")
    world.registry.set_alias(MODEL, "production", "2")
    trail = AuditTrail(settings.state_dir)
    for env in ("staging", "production"):
        trail.record("mr.merge", model=MODEL, env=env, version="2", status="merged",
                     time=time.time() - 10 * 86400)
    reads = []
    real = AuditTrail.verified

    def verified(self: AuditTrail, reader: Any) -> Any:
        reads.append(1)
        return real(self, reader)

    monkeypatch.setattr(AuditTrail, "verified", verified)
    plan = collect(settings, world.registry, provider, dry_run=True)
    assert [(r.prefix, r.reason) for r in plan.removals] == [
        (f"{ROOT}/{NAME}/overlays/staging/", "idle in staging for 10.0 days "
                                             "(gc.staging_ttl_seconds)")]
    assert len(reads) == 1


def test_gc_reads_only_mlflows_does_not_exist_as_a_model_gone(mlflow_server: MlflowServer,
                                                             tmp_path: Path) -> None:
    """A 404 that is not MLflow's answer (the tracking URI one path prefix off, a proxy in
    front of MLflow: ENDPOINT_NOT_FOUND) says nothing about the model: GC stops and removes
    nothing. Before, it read any 4xx as "the model no longer exists" and proposed removing
    the live overlay and its base. Only MLflow's RESOURCE_DOES_NOT_EXIST collects them."""
    model = "gc-live-model"
    client = mlflow_server.client()
    version = create_version(client, model)
    client.set_registered_model_alias(model, "production", version)
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    deployed = provider.propose(Proposal(
        model=model, name=model, env="production", version=version, title="t", description="d",
        files={f"{ROOT}/{model}/base/kustomization.yaml": base(model),
               f"{ROOT}/{model}/overlays/production/kustomization.yaml": overlay(version)},
        managed_prefixes=()))
    assert deployed.mr_iid is not None and provider.merge(deployed.mr_iid, "alice")

    off_by_a_prefix = MlflowRegistry(f"{mlflow_server.url}/mlflow")
    with pytest.raises(PermanentError, match="promoter gc stopped, removing nothing") as stopped:
        collect(settings, off_by_a_prefix, provider, dry_run=False)
    assert "ENDPOINT_NOT_FOUND" in stopped.value.message
    assert stopped.value.hint is not None and "MLFLOW_TRACKING_URI" in stopped.value.hint
    assert provider.open_merge_request(GC_BRANCH) is None

    registry = MlflowRegistry(mlflow_server.url)
    assert collect(settings, registry, provider, dry_run=True).removals == []
    client.delete_registered_model(model)
    assert [r.prefix for r in collect(settings, registry, provider, dry_run=True).removals] == [
        f"{ROOT}/{model}/overlays/production/", f"{ROOT}/{model}/base/"]


def _merged(provider: localgit.LocalGitProvider, iid: int | None) -> None:
    assert iid is not None
    for user in ("alice", "bob"):
        if provider.get(iid).state == "opened":
            provider.approve(iid, user)
    if provider.get(iid).state == "opened":
        provider.merge(iid, "alice")
    assert provider.get(iid).state == "merged"


def _live_in_production(tmp_path: Path) -> tuple[Any, MemoryRegistry, World]:
    """Version 2 of the model merged into production, on the local git provider."""
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    provider = localgit.from_settings(settings)
    registry = MemoryRegistry()
    registry.add(MODEL, "2")
    world = World(registry, provider, MemoryLedger(), CountingImages(),  # type: ignore[arg-type]
                  CountingSigner(), [])
    _merged(provider, world.promote("2", env="production").mr_iid)
    return provider, registry, world


def test_a_decommission_keeps_the_base_a_first_promotion_elsewhere_builds_on(
        tmp_path: Path) -> None:
    """Production's alias deleted while staging's first promotion (its overlay alone, on the
    base main holds) is open: the removal MR keeps the base, by GC's rule. Before, it saw no
    other overlay on main and removed the base; once both merged, staging's overlay pointed
    at a missing ../../base."""
    provider, registry, world = _live_in_production(tmp_path)
    staging = world.promote("2", env="staging")
    assert staging.mr_iid is not None and provider.get(staging.mr_iid).state == "opened"

    registry.set_alias(MODEL, "production", None)
    removal = world.run(action="decommission")
    assert removal.removes == (f"{ROOT}/{NAME}/overlays/production/",)
    _merged(provider, removal.mr_iid)
    _merged(provider, staging.mr_iid)
    on_main = provider.files(f"{ROOT}/{NAME}/", "main")
    assert f"{ROOT}/{NAME}/base/kustomization.yaml" in on_main
    assert f"{ROOT}/{NAME}/overlays/staging/kustomization.yaml" in on_main
    assert not any("/overlays/production/" in path for path in on_main)


def test_a_decommission_keeps_the_base_of_a_hand_made_overlay_that_is_not_utf8(
        tmp_path: Path) -> None:
    """A hand-made dev overlay whose kustomization is UTF-16 (valid YAML for Kustomize, a
    Windows editor's "Unicode"): GC counted it, but the removal MR read only the UTF-8 files
    under overlays/ and removed the base with production's overlay, breaking dev."""
    provider, registry, world = _live_in_production(tmp_path)
    dev = provider.propose(Proposal(
        model=MODEL, name=NAME, env="dev", version="1", title="t", description="d",
        files={f"{ROOT}/{NAME}/overlays/dev/kustomization.yaml":
               "resources: [../../base]\n".encode("utf-16")}, managed_prefixes=()))
    _merged(provider, dev.mr_iid)
    registry.set_alias(MODEL, "production", None)
    removal = world.run(action="decommission")
    assert removal.removes == (f"{ROOT}/{NAME}/overlays/production/",)


@pytest.mark.parametrize("in_flight", ["none", "alias set", "mr open"])
def test_a_decommission_keeps_the_base_any_one_sign_of_a_promotion_under_way_names(
        tmp_path: Path, in_flight: str) -> None:
    """No ledger row of staging (its MR opened by another state database, or its job still
    queued): an alias pointing staging at the model, or an open MR of staging's branch, alone
    keeps the base; with neither, the base goes with the last overlay."""
    provider, registry, world = _live_in_production(tmp_path)
    registry.set_alias(MODEL, "production", None)
    if in_flight == "alias set":
        registry.set_alias(MODEL, "staging", "2")
    elif in_flight == "mr open":
        provider.propose(Proposal(
            model=MODEL, name=NAME, env="staging", version="2", title="t", description="d",
            files={f"{ROOT}/{NAME}/overlays/staging/kustomization.yaml": overlay("2")},
            managed_prefixes=(f"{ROOT}/{NAME}/overlays/staging/",)))

    removes = world.run(action="decommission").removes
    production = f"{ROOT}/{NAME}/overlays/production/"
    assert removes == ((production, f"{ROOT}/{NAME}/base/") if in_flight == "none"
                       else (production,))


def _recorded(tmp_path: Path, *versions: str, supersede: bool = False
              ) -> tuple[Any, Any, Any, MemoryRegistry, World]:
    """The local provider with promoter's outcomes wired in (ledger, audit, MLflow tags, as
    `promoter mr` records them): (provider, ledger, audit, registry, world). ``supersede``:
    `git.newer_version: supersede`."""
    from promoter.service.audit import AuditTrail
    from promoter.service.ledger import StateLedger
    from promoter.service.outcomes import MergeRequestOutcomes
    from promoter.state.db import StateDB
    from promoter.state.pushed_heads import PushedHeads

    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    if supersede:
        settings = settings.model_copy(update={"git": settings.git.model_copy(
            update={"newer_version": "supersede"})})
    db = StateDB.open(settings.state_dir)
    audit, ledger, registry = AuditTrail(settings.state_dir, db), StateLedger(db), \
        MemoryRegistry()
    for version in versions:
        registry.add(MODEL, version)
    environments = settings.targets().environments
    provider = localgit.from_settings(settings, MergeRequestOutcomes(
        registry, ledger, audit, PushedHeads(db),  # type: ignore[arg-type]
        points_at=lambda model, env: base_reuse.pointed_at(registry, model,  # type: ignore[arg-type]
                                                           environments[env])), state=db)
    world = World(registry, provider, ledger, CountingImages(),  # type: ignore[arg-type]
                  CountingSigner(), [])
    return provider, ledger, audit, registry, world


def test_a_decommission_withdraws_the_open_first_promotion_it_makes_pointless(
        tmp_path: Path) -> None:
    """Production's first promotion MR is open when its alias is deleted: main has no
    overlay there, so the removal changes nothing. Before, the decommission adopted that MR
    as its removal MR and left it open, still adding the overlay: merging it deployed
    production while the alias, ledger, audit and live_version all said decommissioned."""
    from promoter.core.live_history import live_at

    provider, ledger, audit, registry, world = _recorded(tmp_path, "2")
    _merged(provider, world.promote("2", env="staging").mr_iid)
    first = world.promote("2", env="production")
    assert first.mr_iid is not None and provider.get(first.mr_iid).state == "opened"

    registry.set_alias(MODEL, "production", None)
    removal = world.run(env="production", action="decommission")

    assert removal.outcome is not None and removal.outcome.value == "unchanged"
    assert removal.status == "decommissioned" and removal.mr_iid is None
    closed = provider.get(first.mr_iid)
    assert closed.state == "closed" and closed.title.endswith(" - withdrawn")
    assert any("already holds exactly" in note for note in provider.notes(first.mr_iid))
    assert not provider.files(f"{ROOT}/{NAME}/overlays/production/", "main")
    row = ledger.get(MODEL, "production")
    assert row is not None and (row.status, row.mr_iid) == ("decommissioned", None)
    assert MODEL not in live_at(audit.entries(), "production", time.time())
    assert registry.live_version(MODEL, "production") is None
    assert not [e for e in audit.entries() if e["event"].startswith("mr.close")]


def test_a_rollback_withdraws_the_open_mr_of_the_newer_version(tmp_path: Path) -> None:
    """Version 2 runs in production and version 3's MR is open when the alias moves back to
    2: main already runs 2. Before, the promotion of 2 adopted version 3's MR and left it
    open; merging it deployed 3 while the alias, ledger, audit and live_version said 2."""
    from promoter.core.live_history import live_at

    provider, ledger, audit, registry, world = _recorded(tmp_path, "2", "3")
    _merged(provider, world.promote("2").mr_iid)
    newer = world.promote("3")
    assert newer.mr_iid is not None and provider.get(newer.mr_iid).state == "opened"

    rollback = world.promote("2")

    assert rollback.outcome is not None and rollback.outcome.value == "unchanged"
    assert rollback.status == "merged" and rollback.mr_iid is None
    closed = provider.get(newer.mr_iid)
    assert closed.state == "closed" and closed.title.endswith(" - withdrawn")
    row = ledger.get(MODEL, "production")
    assert row is not None and (row.version, row.status) == ("2", "merged")
    assert live_at(audit.entries(), "production", time.time())[MODEL].version == "2"
    assert registry.live_version(MODEL, "production") == "2"
    again = world.promote("2")                       # a re-run finds it merged, as it is
    assert (again.outcome.value, again.status) == ("unchanged", "merged")  # type: ignore[union-attr]
    row = ledger.get(MODEL, "production")
    assert row is not None and row.status == "merged"
    assert not [mr for mr in provider.list_mrs("opened")]


def _gc_mr_removing(tmp_path: Path, env: str
                    ) -> tuple[Any, Any, Any, MemoryRegistry, World, int]:
    """Version 2 runs in staging and production; ``env``'s alias was deleted long enough
    for `promoter gc` to propose removing its overlay (its MR is open)."""
    provider, ledger, audit, registry, world = _recorded(tmp_path, "2")
    _merge_everywhere(world, provider)
    registry.set_alias(MODEL, env, None)
    plan = collect(SETTINGS.model_copy(update={"state_dir": tmp_path / "state"}), registry,
                   provider, dry_run=False)
    assert plan.result is not None and plan.result.mr_iid is not None
    assert [r.prefix for r in plan.removals] == [f"{ROOT}/{NAME}/overlays/{env}/"]
    return provider, ledger, audit, registry, world, plan.result.mr_iid


def _gc_mr_removing_production_while_wanted_again(tmp_path: Path
                                                  ) -> tuple[Any, Any, Any, MemoryRegistry,
                                                             World, int]:
    """GC's MR removing production's overlay is open; then the alias was set back to 2."""
    made = _gc_mr_removing(tmp_path, "production")
    made[3].set_alias(MODEL, "production", "2")
    return made


def test_a_promotion_withdraws_the_gc_mr_removing_the_overlay_it_keeps(tmp_path: Path) -> None:
    """The promotion of 2 finds main running it (unchanged), but GC's open MR still removes
    production's overlay. Before, it stayed open: merged, it took production down while the
    alias said 2, and was recorded as production's decommission."""
    provider, _, _, registry, world, gc_iid = \
        _gc_mr_removing_production_while_wanted_again(tmp_path)

    promoted = world.promote("2", env="production")

    assert promoted.outcome is not None and promoted.outcome.value == "unchanged"
    closed = provider.get(gc_iid)
    assert closed.state == "closed" and closed.title.endswith(" - withdrawn")
    assert any("would take down what production runs" in note
               for note in provider.notes(gc_iid))
    assert provider.files(f"{ROOT}/{NAME}/overlays/production/", "main")
    settings = SETTINGS.model_copy(update={"state_dir": tmp_path / "state"})
    assert collect(settings, registry, provider, dry_run=True).removals == []


def test_a_promotion_leaves_a_gc_mr_alone_that_keeps_its_overlay(tmp_path: Path) -> None:
    """GC's open MR removes staging's overlay only: production's promotion keeps it open."""
    provider, _, _, _, world, gc_iid = _gc_mr_removing(tmp_path, "staging")

    world.promote("2", env="production")

    assert provider.get(gc_iid).state == "opened"


def test_a_gc_merge_records_no_decommission_of_an_overlay_wanted_again(
        tmp_path: Path) -> None:
    """GC's MR merged after production's alias was set back to 2 but before its promotion
    ran: main lost the overlay, yet production is wanted. Before, the merge was recorded as
    production's decommission (ledger, live_version, `audit live`) although its alias named
    2. Now it is audited as gc.skipped, and the promotion puts the overlay back."""
    from promoter.core.live_history import live_at

    provider, ledger, audit, registry, world, gc_iid = \
        _gc_mr_removing_production_while_wanted_again(tmp_path)
    _merged(provider, gc_iid)
    assert not provider.files(f"{ROOT}/{NAME}/overlays/production/", "main")

    row = ledger.by_deployment(NAME, "production")
    assert row is not None and (row.version, row.status) == ("2", "merged")
    assert registry.live_version(MODEL, "production") == "2"
    assert live_at(audit.entries(), "production", time.time())[MODEL].version == "2"
    [skipped] = [e for e in audit.entries() if e["event"] == "gc.skipped"]
    assert (skipped["env"], skipped["iid"]) == ("production", gc_iid)
    assert "points the model at version 2 again" in skipped["reason"]
    assert not [e for e in audit.entries() if e["event"] == "mr.merge" and e.get("gc")]

    restored = world.promote("2", env="production")
    assert restored.outcome is not None and restored.outcome.value == "created"
    _merged(provider, restored.mr_iid)
    assert provider.files(f"{ROOT}/{NAME}/overlays/production/", "main")


def test_a_gc_merge_still_decommissions_an_overlay_its_alias_pointed_at_all_along(
        tmp_path: Path) -> None:
    """Staging idle past its TTL is removed while its alias still names 2: that merge is a
    decommission. Only a removal GC planned because nothing pointed there is undone in the
    record by an alias set back (before, this one was skipped too, and the ledger, the
    live_version and `audit live` went on saying staging runs 2)."""
    from promoter.core.live_history import live_at

    provider, ledger, audit, registry, world = _recorded(tmp_path, "2")
    _merge_everywhere(world, provider)
    settings = SETTINGS.model_copy(update={
        "state_dir": tmp_path / "state",
        "gc": SETTINGS.gc.model_copy(update={"staging_ttl_seconds": 0.001})})
    time.sleep(0.01)
    plan = collect(settings, registry, provider, dry_run=False)
    assert [r.prefix for r in plan.removals] == [f"{ROOT}/{NAME}/overlays/staging/"]
    assert plan.result is not None and plan.result.mr_iid is not None
    _merged(provider, plan.result.mr_iid)

    row = ledger.by_deployment(NAME, "staging")
    assert row is not None and row.status == "decommissioned"
    assert registry.live_version(MODEL, "staging") is None
    assert MODEL not in live_at(audit.entries(), "staging", time.time())
    assert not [e for e in audit.entries() if e["event"] == "gc.skipped"]


def _idle_in_staging(tmp_path: Path) -> tuple[Any, Any, Any, MemoryRegistry, World]:
    """Version 2 runs in staging and production, staging idle past gc.staging_ttl_seconds
    (the alias still names 2; versions 2 and 3 exist): (settings, provider, ledger, registry,
    world). Alone, `promoter gc` removes staging's overlay (see the test above)."""
    provider, ledger, _, registry, world = _recorded(tmp_path, "2", "3")
    _merge_everywhere(world, provider)
    settings = SETTINGS.model_copy(update={
        "state_dir": tmp_path / "state",
        "gc": SETTINGS.gc.model_copy(update={"staging_ttl_seconds": 0.001})})
    time.sleep(0.01)
    return settings, provider, ledger, registry, world


@pytest.mark.parametrize("in_flight", ["none", "alias moved", "claimed", "row open",
                                       "mr open"])
def test_an_idle_overlay_stays_while_any_one_sign_of_a_promotion_into_it_names(
        tmp_path: Path, in_flight: str) -> None:
    """The reviewer's case: staging idle past its TTL, then its alias moved to 3 and the
    promotion's MR opened. Before, GC measured idleness from when 2 went live and proposed
    removing the overlay that MR updates: merged first, the promotion's MR conflicted and
    staging was left without an overlay while its alias named 3. Each sign alone keeps it:
    the alias (or stage) naming another version than the overlay pins (its job perhaps still
    queued), the ledger's claim of staging (made just before the proposal), staging's row
    naming an open MR, an open MR of promote/<name>/staging (whatever state database
    opened it)."""
    settings, provider, ledger, registry, _ = _idle_in_staging(tmp_path)
    if in_flight == "alias moved":
        registry.set_alias(MODEL, "staging", "3")
    elif in_flight == "claimed":
        assert ledger.claim_name(NAME, MODEL, "staging") == set()
    elif in_flight == "row open":
        ledger.put(DeployedState(MODEL, "staging", NAME, "3", "mr_opened", 99, None))
    elif in_flight == "mr open":
        provider.propose(Proposal(
            model=MODEL, name=NAME, env="staging", version="3", title="t", description="d",
            files={f"{ROOT}/{NAME}/overlays/staging/kustomization.yaml": overlay("3")},
            managed_prefixes=(f"{ROOT}/{NAME}/overlays/staging/",)))

    removals = collect(settings, registry, provider, dry_run=True).removals
    assert [r.prefix for r in removals] == (
        [f"{ROOT}/{NAME}/overlays/staging/"] if in_flight == "none" else [])


def test_gc_leaves_an_idle_overlay_to_the_promotion_updating_it(tmp_path: Path) -> None:
    """End to end on the local provider: the promotion of 3 into idle staging is open; `gc`
    proposes nothing, and the promotion's MR merges (before, GC's MR removed the overlay and
    the promotion's then conflicted with main)."""
    settings, provider, _, registry, world = _idle_in_staging(tmp_path)
    promoted = world.promote("3", env="staging")
    assert promoted.mr_iid is not None and provider.get(promoted.mr_iid).state == "opened"

    plan = collect(settings, registry, provider, dry_run=False)
    assert plan.removals == [] and plan.result is None
    assert provider.open_merge_request(GC_BRANCH) is None
    _merged(provider, promoted.mr_iid)
    on_main = provider.files(f"{ROOT}/{NAME}/overlays/staging/", "main")
    assert 'promoter.dev/model-version: "3"' in on_main[
        f"{ROOT}/{NAME}/overlays/staging/kustomization.yaml"]


@pytest.mark.parametrize("next_step", ["gc runs again", "the promotion runs"])
def test_a_gc_mr_removing_an_idle_overlay_is_closed_once_a_promotion_into_it_comes(
        tmp_path: Path, next_step: str) -> None:
    """GC's MR removing idle staging is open when staging's alias moves to 3: the next `gc`
    finds nothing to remove and closes it (the removals are wanted again), or the promotion
    closes it; either way the one after proposes nothing while the promotion is open."""
    settings, provider, _, registry, world = _idle_in_staging(tmp_path)
    first = collect(settings, registry, provider, dry_run=False)
    assert [r.prefix for r in first.removals] == [f"{ROOT}/{NAME}/overlays/staging/"]
    assert first.result is not None and first.result.mr_iid is not None

    registry.set_alias(MODEL, "staging", "3")
    if next_step == "gc runs again":
        again = collect(settings, registry, provider, dry_run=False)
        assert again.removals == [] and again.withdrawn is not None
        assert again.withdrawn.iid == first.result.mr_iid
        assert any("needed again" in note for note in provider.notes(first.result.mr_iid))
    promoted = world.run("staging", "3")
    assert promoted.mr_iid is not None and provider.get(promoted.mr_iid).state == "opened"
    assert provider.get(first.result.mr_iid).state == "closed"

    later = collect(settings, registry, provider, dry_run=False)
    assert later.removals == [] and later.result is None


def test_gc_puts_back_an_idle_overlay_a_promotion_claimed_while_it_planned(
        tmp_path: Path) -> None:
    """The race on the overlay: the promotion into staging claims after GC's plan looked and
    looks at GC's branch before GC pushes; GC, looking at the claims after its push, proposes
    again without staging's overlay (nothing is left: it withdraws its MR)."""
    settings, provider, ledger, registry, _ = _idle_in_staging(tmp_path)
    propose = provider.propose

    def claimed_meanwhile(proposal: Proposal) -> Any:
        assert ledger.claim_name(NAME, MODEL, "staging") == set()
        provider.propose = propose   # type: ignore[method-assign]
        return propose(proposal)

    provider.propose = claimed_meanwhile   # type: ignore[method-assign]
    plan = collect(settings, registry, provider, dry_run=False)

    assert plan.removals == [] and plan.withdrawn is not None
    assert provider.get(plan.withdrawn.iid).state == "closed"
    assert provider.files(f"{ROOT}/{NAME}/overlays/staging/", "main")


def test_an_idle_overlay_whose_trigger_names_another_version_is_not_idle() -> None:
    """The plan alone: idleness counts only while the trigger names the version the overlay
    pins, and no promotion into the environment is under way (``promoting``)."""
    found = [gc.Overlay("a", "staging", "Model A", "3")]
    now = 100 * 86400.0

    def plan(pointed_at: str, promoting: bool) -> list[gc.Removal]:
        return gc.plan(ROOT, found, lambda o: gc.RegistryView(True, True, pointed_at),
                       lambda o: now - 10 * 86400, frozenset({"staging"}), 7 * 86400.0, now,
                       paths=(), orphans=(), promoting=lambda o: promoting)

    assert [r.prefix for r in plan("3", False)] == [f"{ROOT}/a/overlays/staging/",
                                                    f"{ROOT}/a/base/"]
    assert plan("4", False) == []
    assert plan("3", True) == []


def test_an_overlay_whose_version_was_deleted_stays_while_another_version_is_targeted() -> None:
    """v2 deleted from MLflow while the alias names v5, whose promotion (MR open, perhaps)
    updates the overlay: GC removed it, the promotion's MR conflicted and production went
    dark. Only with nothing pointing the environment at the model does the overlay go."""
    found = [gc.Overlay("a", "production", "Model A", "2")]

    def planned(pointed_at: str | None) -> list[tuple[str, str]]:
        view = gc.RegistryView(model_exists=True, version_exists=False, pointed_at=pointed_at)
        return [(r.prefix, r.reason) for r in gc.plan(
            ROOT, found, lambda o: view, lambda o: None, frozenset(), None, 0.0,
            paths=FILES, orphans=[])]

    assert planned("5") == []
    assert planned(None) == [
        (f"{ROOT}/a/overlays/production/", "version 2 of 'Model A' no longer exists")]
