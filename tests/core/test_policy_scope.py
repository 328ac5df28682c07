"""core.policy_scope: which overlays a merge request's changes can affect, and the team GPU
quota summed over a whole tree."""

from __future__ import annotations

from promoter.core.policy_scope import GpuClaim, overlays_to_check, team_quota_totals

TREE = "manifests"
OVERLAYS = [f"manifests/{model}/overlays/{env}" for model in ("fraud", "chat")
            for env in ("staging", "production")]


def check(*changed: str) -> list[str]:
    return overlays_to_check(changed, OVERLAYS, TREE)


def test_an_overlays_own_file_selects_that_overlay() -> None:
    assert check("manifests/fraud/overlays/production/kustomization.yaml") == \
        ["manifests/fraud/overlays/production"]


def test_a_file_in_a_subfolder_of_an_overlay_selects_that_overlay() -> None:
    assert check("manifests/fraud/overlays/production/patches/gpu.yaml") == \
        ["manifests/fraud/overlays/production"]


def test_a_base_change_selects_every_overlay_of_that_model() -> None:
    assert check("manifests/fraud/base/deployment.yaml") == \
        ["manifests/fraud/overlays/production", "manifests/fraud/overlays/staging"]


def test_a_shared_file_under_the_tree_selects_every_overlay() -> None:
    assert check("manifests/components/gpu/kustomization.yaml") == sorted(OVERLAYS)
    assert check("manifests/kustomization.yaml") == sorted(OVERLAYS)
    # a deleted model's directory: something may have referenced it
    assert check("manifests/gone/base/kustomization.yaml") == sorted(OVERLAYS)


def test_files_outside_the_tree_select_nothing() -> None:
    assert check("README.md", "manifestsx/fraud/base/a.yaml") == []


def test_the_audit_fixture_selects_both_overlays_of_its_model() -> None:
    # /tmp/audit-gov/changed-files.txt: an MR touching base/ and a nested overlay patch
    assert check("manifests/fraud/base/deployment.yaml", "manifests/fraud/base/kustomization.yaml",
                 "manifests/fraud/overlays/production/patches/gpu.yaml",
                 "manifests/fraud/overlays/production/kustomization.yaml") == \
        ["manifests/fraud/overlays/production", "manifests/fraud/overlays/staging"]


def test_the_quota_sums_every_overlay_of_a_team_per_environment() -> None:
    claims = [GpuClaim("m/a/overlays/production", "risk", "production", 4),
              GpuClaim("m/b/overlays/production", "risk", "production", 4),
              GpuClaim("m/a/overlays/staging", "risk", "staging", 4),
              GpuClaim("m/c/overlays/production", "vision", "production", 8)]
    totals = team_quota_totals(claims, {"risk": 6}, None)
    assert set(totals) == {("risk", "production"), ("risk", "staging")}  # vision: no quota
    denied = totals[("risk", "production")]
    assert not denied.passed
    assert denied.detail.startswith("risk claims 8 GPUs in production at full scale")
    assert "m/a/overlays/production (4), m/b/overlays/production (4)" in denied.detail
    assert "over its quota of 6" in denied.detail
    assert totals[("risk", "staging")].passed


def test_a_team_without_an_entry_gets_the_default_quota() -> None:
    claims = [GpuClaim("m/a/overlays/production", "unknown", "production", 4)]
    assert not team_quota_totals(claims, {}, 2)[("unknown", "production")].passed


# What each overlay reaches (gitops.references.reached_paths): chat's production overlay reads a
# component in fraud's model directory and a patch file of fraud's staging overlay.
REACHED = {
    "manifests/chat/overlays/production": [
        "manifests/chat/overlays/production", "manifests/chat/base",
        "manifests/fraud/gpu", "manifests/fraud/overlays/staging/cap.yaml"],
    "manifests/chat/overlays/staging": ["manifests/chat/overlays/staging", "manifests/chat/base"],
}


def reach(*changed: str) -> list[str]:
    return overlays_to_check(changed, OVERLAYS, TREE, REACHED)


def test_a_path_of_another_model_that_an_overlay_reaches_selects_it() -> None:
    fraud = ["manifests/fraud/overlays/production", "manifests/fraud/overlays/staging"]
    assert reach("manifests/fraud/gpu/kustomization.yaml") == \
        ["manifests/chat/overlays/production", *fraud]
    # another overlay's own file, named by chat's production overlay
    assert reach("manifests/fraud/overlays/staging/cap.yaml") == \
        ["manifests/chat/overlays/production", "manifests/fraud/overlays/staging"]


def test_a_deleted_path_under_a_reached_directory_selects_the_overlay() -> None:
    # gone from the tree the walk read, but its directory is still reached
    assert "manifests/chat/overlays/production" in reach("manifests/fraud/gpu/old-patch.yaml")


def test_a_changed_path_above_a_reached_one_selects_the_overlay() -> None:
    # a symbolic link (git lists it as a file) on the way to what the overlay reads
    reached = {"manifests/chat/overlays/production": ["manifests/fraud/link/gpu"]}
    assert "manifests/chat/overlays/production" in overlays_to_check(
        ["manifests/fraud/link"], OVERLAYS, TREE, reached)


def test_what_no_other_overlay_reaches_selects_by_layout_as_before() -> None:
    assert reach("manifests/fraud/overlays/production/kustomization.yaml") == \
        ["manifests/fraud/overlays/production"]
    assert reach("manifests/chat/base/a.yaml") == \
        ["manifests/chat/overlays/production", "manifests/chat/overlays/staging"]
    assert reach("manifests/components/gpu/kustomization.yaml") == sorted(OVERLAYS)
    assert reach("README.md") == []
