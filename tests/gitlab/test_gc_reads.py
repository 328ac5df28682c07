"""What `promoter gc` reads of GitLab (the stand-in, through python-gitlab): one listing of
the target branch, then the kustomization files only. A tree holds several files per overlay
(patches, plots) and each file read is a request, so reading them all cost a request per file
of every deployment on every run."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from promoter.garbage import collect
from promoter.ports.git import Proposal
from tests.core.test_pipeline import SETTINGS, MemoryRegistry
from tests.gitlab.conftest import ENV, MODEL, NAME, GitLabHarness
from tests.gitlab.standin.server import StandIn
from tests.test_gc import PNG, base, overlay

ROOT = "manifests"


def files_read(standin: StandIn) -> list[str]:
    """The paths of the single files read through GitLab's files API since the last clear."""
    return sorted(unquote(path.split("/repository/files/", 1)[1].removesuffix("/raw"))
                  for _, path in standin.requests if "/repository/files/" in path)


def test_gc_lists_the_tree_and_reads_only_its_kustomization_files(
        standin: StandIn, tmp_path: Path) -> None:
    harness = GitLabHarness(standin, tmp_path)
    kustomizations = {
        f"{ROOT}/{NAME}/base/kustomization.yaml": base(MODEL),
        f"{ROOT}/{NAME}/overlays/{ENV}/kustomization.yaml": overlay("1"),
        f"{ROOT}/kept/base/kustomization.yaml": base("Kept"),
        f"{ROOT}/gone/base/kustomization.yaml": base("Gone"),
    }
    others: dict[str, str | bytes] = {
        f"{ROOT}/{NAME}/base/deployment.yaml": "kind: Deployment\n",
        f"{ROOT}/{NAME}/overlays/{ENV}/replicas.yaml": "kind: Deployment\n",
        f"{ROOT}/{NAME}/forecast-{ENV}.png": PNG,
        f"{ROOT}/gone/base/service.yaml": "kind: Service\n",
        # Only a binary file under kept's overlays/: still an overlay its base must stay for.
        f"{ROOT}/kept/overlays/dev/plot.png": PNG,
    }
    landed = harness.provider.propose(Proposal(
        model=MODEL, name=NAME, env=ENV, version="1", title="t", description="d",
        files={**kustomizations, **others}, managed_prefixes=(), approvals_required=0))
    assert landed.mr_iid is not None
    harness.merge(landed.mr_iid, None)
    registry = MemoryRegistry()
    registry.add(MODEL, "1")
    registry.set_alias(MODEL, ENV, "1")
    settings = SETTINGS.model_copy(update={
        "state_dir": tmp_path / "state",
        "git": SETTINGS.git.model_copy(update={"manifests_dir": ROOT, "target_branch": "main"})})
    standin.requests.clear()

    plan = collect(settings, registry, harness.provider, dry_run=True)

    assert [removal.prefix for removal in plan.removals] == [f"{ROOT}/gone/base/"]
    assert files_read(standin) == sorted(kustomizations)
