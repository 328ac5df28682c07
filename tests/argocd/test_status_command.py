"""`promoter status`: the kubernetes client against an HTTP stand-in of the Kubernetes API
serving Argo CD Application objects (list and watch)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from promoter.ports.pipeline import DeployedState
from promoter.secret_settings import Secret
from promoter.service.argocd_hook import ArgoCDHookHandler
from promoter.service.audit import AuditTrail
from promoter.service.cluster_feedback import ClusterFeedback
from promoter.service.cluster_status_store import StatusStore
from promoter.service.ledger import StateLedger
from promoter.state.pushed_heads import PushedHeads
from tests.argocd.applications import REVISION, application, notification
from tests.argocd.k8s_standin import KubeStandin, serve
from tests.ci.local_runner import GIT
from tests.conftest import cli_runner


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    standin = KubeStandin()
    with serve(standin) as port:
        kubeconfig = standin.kubeconfig(tmp_path / "kubeconfig", port)
        config = tmp_path / "promoter.yaml"
        config.write_text(f"state_dir: {tmp_path / 'state'}\n"
                          f"argocd: {{kubeconfig: {kubeconfig}}}\n")
        StateLedger(tmp_path / "state").put(DeployedState(
            model="Fraud Detector", env="production", name="fraud-detector", version="7",
            status="merged", mr_iid=4, head_sha="b" * 40))
        # The local provider holds no MR !4: the head promoter pushed for it (the ledger's
        # head_sha) names the commit the clusters must carry to run version 7.
        PushedHeads(tmp_path / "state").record(0, 4, "promote/fraud-detector/production",
                                               REVISION, "7", "Fraud Detector")
        yield {"standin": standin, "config": config, "state": tmp_path / "state"}


def test_one_row_per_model_environment_and_cluster(cluster: dict, capsys) -> None:
    standin = cluster["standin"]
    for name, env, where in [("fraud-detector", "production", "gpu-eu-1"),
                             ("fraud-detector", "production", "gpu-us-1"),
                             ("llm-chat", "staging", "gpu-stg-1")]:
        standin.put("argocd", application(name, env, where))
    unrelated = application("x", "staging", "c")
    unrelated["metadata"]["labels"] = {"team": "other"}
    unrelated["metadata"]["name"] = "not-promoters"
    standin.put("argocd", unrelated)
    code, out, err = cli_runner(capsys)("--config", str(cluster["config"]), "status",
                                        "--output", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["model"], r["env"], r["cluster"]) for r in rows] == [
        ("Fraud Detector", "production", "gpu-eu-1"), ("Fraud Detector", "production", "gpu-us-1"),
        ("llm-chat", "staging", "gpu-stg-1")]
    assert rows[0]["version"] == "7" and rows[0]["mr"] == 4
    assert rows[0]["sync"] == "Synced" and rows[0]["revision"] == REVISION
    assert any("labelSelector=promoter.dev%2Fmodel" in r or "labelSelector=promoter.dev/model"
               in r for r in standin.requests)
    audit = [json.loads(line) for line in (cluster["state"] / "audit.jsonl").read_text()
             .splitlines()]
    deployed = [e for e in audit if e["event"] == "argocd.status" and e["name"] ==
                "fraud-detector"]
    assert deployed[-1]["deployed"] is True and deployed[-1]["model"] == "Fraud Detector"


def test_status_is_written_back_when_the_mr_is_not_the_providers(cluster: dict,
                                                                 capsys) -> None:
    """The ledger names MR !4, which the local provider does not hold (a row from another
    provider, or a deleted MR). The note on it failed with the state database's "FOREIGN KEY
    constraint failed", after MLflow and the audit trail were told: the status stayed untold,
    each listing warned "status not written back" and appended the argocd.status entry again.
    Now the note is skipped and the telling completes, once."""
    cluster["standin"].put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    run = cli_runner(capsys)
    for _ in range(2):
        code, _, err = run("--config", str(cluster["config"]), "status")
        assert code == 0 and "not written back" not in err, err
    assert [e["deployed"] for e in _told(cluster["state"])] == [True]


def test_model_and_env_filters_and_text_table(cluster: dict, capsys) -> None:
    standin = cluster["standin"]
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1",
                                      health="Degraded"))
    standin.put("argocd", application("llm-chat", "production", "gpu-eu-1"))
    code, out, _ = cli_runner(capsys)("--config", str(cluster["config"]), "status",
                                      "Fraud Detector", "--env", "production", "--no-record")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "ENV", "CLUSTER", "VERSION", "MR", "SYNC", "HEALTH",
                                "SINCE"]
    assert len(lines) == 2 and "Degraded" in lines[1] and "!4" in lines[1]
    assert not (cluster["state"] / "audit.jsonl").exists()


def test_watch_reports_changes_as_they_come(cluster: dict, capsys) -> None:
    standin = cluster["standin"]
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1",
                                      sync="OutOfSync", health="Progressing"))
    run = cli_runner(capsys)
    # the list returns the OutOfSync state; the watch delivers what follows it
    import threading

    def later() -> None:
        standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1",
                                          reconciled_at="2024-03-05T08:00:00Z"))

    timer = threading.Timer(0.5, later)
    timer.start()
    code, out, err = run("--config", str(cluster["config"]), "status", "--watch", "--for", "3",
                         "--output", "json", "--no-record")
    timer.join()
    assert code == 0, err
    # One JSON object per line, the first listing's rows included (as the README says).
    watched = [json.loads(line) for line in out.splitlines()]
    assert watched[0]["sync"] == "OutOfSync"
    assert watched[-1]["sync"] == "Synced" and watched[-1]["health"] == "Healthy"
    assert any("watch=true" in r for r in standin.requests)


def test_wrong_credentials_say_what_to_grant(cluster: dict, capsys) -> None:
    cluster["standin"].token = "rotated"
    code, _, err = cli_runner(capsys)("--config", str(cluster["config"]), "status")
    assert code == 1
    assert "refused" in err and "applications.argoproj.io" in err


def test_watch_lists_again_when_its_resource_version_expired(cluster: dict, capsys) -> None:
    standin = cluster["standin"]
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1",
                                      sync="OutOfSync"))
    standin.expired_before = 10_000        # every watch from the first list's version is 410
    code, _, err = cli_runner(capsys)("--config", str(cluster["config"]), "status", "--watch",
                                        "--for", "2", "--output", "json", "--no-record")
    assert code == 0, err
    lists = [r for r in standin.requests if "watch=" not in r]
    assert len(lists) >= 2                  # the first list, then again after the 410


def test_a_version_proposed_but_not_merged_is_not_shown_as_running(cluster: dict,
                                                                   capsys) -> None:
    """Version 7 is live (its merge is in the audit trail); version 8's MR !5 is open: the
    clusters run 7, and 8 is shown as proposed, not as their version."""
    AuditTrail(cluster["state"]).record(
        "mr.merge", actor="alice", name="fraud-detector", env="production", iid=4,
        head_sha=REVISION, model="Fraud Detector", version="7", status="merged")
    StateLedger(cluster["state"]).put(DeployedState(
        model="Fraud Detector", env="production", name="fraud-detector", version="8",
        status="mr_opened", mr_iid=5, head_sha="c" * 40))
    cluster["standin"].put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    run = cli_runner(capsys)
    code, out, err = run("--config", str(cluster["config"]), "status", "--no-record",
                         "--output", "json")
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["version"], row["proposed"], row["mr"]) == ("7", "8", 5)
    code, out, _ = run("--config", str(cluster["config"]), "status", "--no-record")
    assert "7 (v8 proposed)" in out


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT}).stdout.strip()


def _version_7_merged(cluster: dict[str, Any]) -> tuple[str, str]:
    """A GitOps remote where !4 (promoter's head for version 7) was merged into main, the
    local provider reading it: (the commit before the merge, the merge commit). The audit
    trail records the merge as the MR hook does."""
    remote, work = cluster["state"].parent / "gitops.git", cluster["state"].parent / "work"
    _git(cluster["state"].parent, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(cluster["state"].parent, "clone", "-q", str(remote), str(work))
    _git(work, "commit", "-q", "--allow-empty", "-m", "version 6 live")
    before = _git(work, "rev-parse", "HEAD")
    _git(work, "checkout", "-q", "-b", "promote/fraud-detector/production")
    _git(work, "commit", "-q", "--allow-empty", "-m", "Promote fraud-detector v7")
    head = _git(work, "rev-parse", "HEAD")
    PushedHeads(cluster["state"]).record(0, 4, "promote/fraud-detector/production", head, "7",
                                         "Fraud Detector")
    AuditTrail(cluster["state"]).record(
        "mr.merge", actor="alice", name="fraud-detector", env="production", iid=4,
        head_sha=head, model="Fraud Detector", version="7", status="merged")
    _git(work, "checkout", "-q", "main")
    _git(work, "merge", "-q", "--no-ff", "-m", "Merge !4", "promote/fraud-detector/production")
    _git(work, "push", "-q", "origin", "main", "promote/fraud-detector/production")
    with cluster["config"].open("a") as config:
        config.write(f"git: {{remote: {remote}}}\n")
    return before, _git(work, "rev-parse", "HEAD")


@pytest.mark.parametrize("record", ["--record", "--no-record"])
def test_a_cluster_whose_revision_lacks_the_merge_is_not_shown_running_it(
        cluster: dict, capsys, record: str) -> None:
    """gpu-us-1 still syncs the commit before !4's merge, so it may run version 6: it used to
    be shown running 7, as gpu-eu-1 (at the merge) does. Its version is now unknown, and 7
    is named as merged but not confirmed there."""
    before, merge = _version_7_merged(cluster)
    cluster["standin"].put("argocd", application("fraud-detector", "production", "gpu-eu-1",
                                                 revision=merge))
    cluster["standin"].put("argocd", application("fraud-detector", "production", "gpu-us-1",
                                                 revision=before))
    run = cli_runner(capsys)
    code, out, err = run("--config", str(cluster["config"]), "status", record, "-o", "json")
    assert code == 0, err
    assert [(r["cluster"], r["version"], r["merged"]) for r in json.loads(out)] == [
        ("gpu-eu-1", "7", None), ("gpu-us-1", None, "7")]
    code, out, _ = run("--config", str(cluster["config"]), "status", record)
    assert code == 0
    [eu, us] = (re.split(r"\s{2,}", line) for line in out.splitlines()[1:])
    assert (eu[2], eu[3]) == ("gpu-eu-1", "7")
    assert (us[2], us[3]) == ("gpu-us-1", "- (v7 merged, not confirmed here)")


def test_while_a_newer_version_is_proposed_the_live_one_is_confirmed_per_cluster(
        cluster: dict, capsys) -> None:
    """Version 8's MR is open, so the version shown is the one live from the audit trail,
    7: a cluster whose revision lacks 7's merge was shown running it all the same."""
    before, merge = _version_7_merged(cluster)
    StateLedger(cluster["state"]).put(DeployedState(
        model="Fraud Detector", env="production", name="fraud-detector", version="8",
        status="mr_opened", mr_iid=5, head_sha="c" * 40))
    for where, revision in (("gpu-eu-1", merge), ("gpu-us-1", before)):
        cluster["standin"].put("argocd", application("fraud-detector", "production", where,
                                                     revision=revision))
    run = cli_runner(capsys)
    code, out, err = run("--config", str(cluster["config"]), "status", "-o", "json")
    assert code == 0, err
    assert [(r["version"], r["merged"], r["proposed"]) for r in json.loads(out)] == [
        ("7", None, "8"), (None, "7", "8")]
    code, out, _ = run("--config", str(cluster["config"]), "status", "--no-record")
    assert "- (v7 merged, not confirmed here) (v8 proposed)" in out.splitlines()[2]


def test_a_git_remote_that_cannot_be_read_leaves_the_merge_unconfirmed(cluster: dict,
                                                                      capsys) -> None:
    """The listing still shows when the git provider cannot be asked, and claims nothing it
    could not check."""
    _, merge = _version_7_merged(cluster)
    cluster["standin"].put("argocd", application("fraud-detector", "production", "gpu-eu-1",
                                                 revision=merge))
    run = cli_runner(capsys)
    assert run("--config", str(cluster["config"]), "status", "--no-record")[0] == 0  # cloned
    shutil.rmtree(cluster["state"].parent / "gitops.git")
    code, out, err = run("--config", str(cluster["config"]), "status", "--no-record", "-o",
                         "json")
    assert code == 0, err
    assert [(r["version"], r["merged"]) for r in json.loads(out)] == [(None, "7")]
    assert "cannot tell which clusters' revisions contain a merge" in err


def test_for_without_watch_is_a_usage_error(cluster: dict, capsys) -> None:
    code, _, err = cli_runner(capsys)("--config", str(cluster["config"]), "status", "--for", "5")
    assert code == 2 and "--watch" in err


@pytest.mark.parametrize("status", ["decommissioned", "closed", "denied"])
def test_only_an_open_mr_is_shown_as_a_proposal(cluster: dict, capsys, status: str) -> None:
    StateLedger(cluster["state"]).put(DeployedState(
        model="Fraud Detector", env="production", name="fraud-detector", version="8",
        status=status, mr_iid=6, head_sha="d" * 40))
    cluster["standin"].put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    code, out, err = cli_runner(capsys)("--config", str(cluster["config"]), "status",
                                        "--no-record", "--output", "json")
    assert code == 0, err
    assert json.loads(out)[0]["proposed"] is None


def _being_deleted(app: dict[str, Any], at: str = "2024-03-05T07:40:00Z") -> dict[str, Any]:
    """The Application as the ApplicationSet's delete leaves it: held by the resources
    finalizer while Argo CD prunes, deletionTimestamp set, and still reconciled."""
    app["metadata"]["deletionTimestamp"] = at
    app["metadata"]["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    return app


def _once_watching(standin: KubeStandin, change: Callable[[], None]) -> threading.Thread:
    """Run ``change`` once the watch has started (after the listing, whatever the start-up
    time), so the watch, not the listing, sees it."""
    def run() -> None:
        deadline = time.monotonic() + 10
        while not any("watch=true" in r for r in standin.requests) and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        change()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _told(state: Path, name: str = "fraud-detector") -> list[dict[str, Any]]:
    return [e for e in map(json.loads, (state / "audit.jsonl").read_text().splitlines())
            if e["event"] == "argocd.status" and e["name"] == name]


def test_a_listed_application_being_deleted_does_not_count(cluster: dict, capsys) -> None:
    """gpu-us-1 leaves the environment: its Application, still held by its finalizer, is no
    cluster of it (as the deleted notification says), however late it was reconciled, and a
    later listing does not bring it back."""
    standin, state = cluster["standin"], cluster["state"]
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    standin.put("argocd", application("fraud-detector", "production", "gpu-us-1",
                                      health="Progressing"))
    run = cli_runner(capsys)
    assert run("--config", str(cluster["config"]), "status", "-o", "json")[0] == 0
    assert _told(state)[-1]["deployed"] is False
    standin.put("argocd", _being_deleted(application(
        "fraud-detector", "production", "gpu-us-1", health="Progressing",
        reconciled_at="2024-03-05T07:45:00Z")))
    for _ in range(2):
        code, out, err = run("--config", str(cluster["config"]), "status", "-o", "json")
        assert code == 0, err
        assert [r["cluster"] for r in json.loads(out)] == ["gpu-eu-1"]
        assert _told(state)[-1]["deployed"] is True
    assert [r.cluster for r in StatusStore(state).rows("fraud-detector", "production")] == \
        ["gpu-eu-1"]


def test_watch_stops_counting_an_application_once_its_deletion_starts(cluster: dict,
                                                                      capsys) -> None:
    standin, state = cluster["standin"], cluster["state"]
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    standin.put("argocd", application("fraud-detector", "production", "gpu-us-1",
                                      health="Progressing"))

    def later() -> None:   # a MODIFIED event: deletion started, reconciled again
        standin.put("argocd", _being_deleted(application(
            "fraud-detector", "production", "gpu-us-1", health="Progressing",
            reconciled_at="2024-03-05T07:45:00Z")))

    changer = _once_watching(standin, later)
    code, out, err = cli_runner(capsys)("--config", str(cluster["config"]), "status",
                                        "--watch", "--for", "3", "--output", "json")
    changer.join()
    assert code == 0, err
    watched = [json.loads(line) for line in out.splitlines()]
    assert (watched[-1]["cluster"], watched[-1].get("deleted")) == ("gpu-us-1", True)
    assert _told(state)[-1]["deployed"] is True
    assert [r.cluster for r in StatusStore(state).rows("fraud-detector", "production")] == \
        ["gpu-eu-1"]


def _stored(state: Path) -> dict[tuple[str, str], list[str]]:
    store = StatusStore(state)
    pairs = [("fraud-detector", "production"), ("fraud-detector", "staging"),
             ("llm-chat", "production")]
    return {pair: [r.cluster for r in store.rows(*pair)] for pair in pairs}


def test_a_listing_drops_the_rows_of_an_environment_with_no_application_left(
        cluster: dict, capsys) -> None:
    """Every Application of an environment gone (no finalizer, no deleted notification):
    its rows stayed for good, and a later merge was judged (after_merge) on them. A listing
    drops them, but only within what it lists (MODEL, --env)."""
    standin, state, config = cluster["standin"], cluster["state"], str(cluster["config"])
    for name, env in [("fraud-detector", "production"), ("fraud-detector", "staging"),
                      ("llm-chat", "production")]:
        standin.put("argocd", application(name, env, "gpu-eu-1"))
    run = cli_runner(capsys)
    assert run("--config", config, "status")[0] == 0
    assert all(_stored(state).values())
    standin.objects.clear()
    # Another model's Application shows the namespace is Argo CD's: the listing is truthful.
    standin.put("argocd", application("other-model", "production", "gpu-eu-1"))
    # Outside the listing's filters nothing goes: the model filter names the registered
    # model (the ledger's) or the deployment; --env one environment.
    assert run("--config", config, "status", "llm-chat", "--env", "staging")[0] == 0
    assert run("--config", config, "status", "--no-record")[0] == 0
    assert all(_stored(state).values())
    assert run("--config", config, "status", "Fraud Detector", "--env", "production")[0] == 0
    assert _stored(state) == {("fraud-detector", "production"): [],
                              ("fraud-detector", "staging"): ["gpu-eu-1"],
                              ("llm-chat", "production"): ["gpu-eu-1"]}
    assert _told(state)[-1]["env"] == "production" and _told(state)[-1]["deployed"] is False
    code, out, _ = run("--config", config, "status", "-o", "json")
    assert code == 0 and [row["name"] for row in json.loads(out)] == ["other-model"]
    assert not any(_stored(state).values())


def test_a_listing_with_no_application_at_all_keeps_the_stored_status(
        cluster: dict, capsys) -> None:
    """An empty listing is also what a wrong argocd.namespace answers: it cleared every
    stored row and told MLflow and the audit trail that every model left its clusters."""
    standin, state, config = cluster["standin"], cluster["state"], str(cluster["config"])
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    run = cli_runner(capsys)
    assert run("--config", config, "status")[0] == 0
    told = _told(state)
    standin.objects.clear()
    code, out, err = run("--config", config, "status", "-o", "json")
    assert code == 0 and json.loads(out) == []
    assert "is argocd.namespace right?" in err and "'argocd'" in err
    assert _stored(state)[("fraud-detector", "production")] == ["gpu-eu-1"]
    assert _told(state) == told


def test_a_listing_of_one_environment_with_none_left_drops_its_rows(
        cluster: dict, capsys) -> None:
    """--env staging lists staging only: with staging's last Application gone its listing is
    empty, though the namespace holds others, and the empty-listing guard kept the rows."""
    standin, state, config = cluster["standin"], cluster["state"], str(cluster["config"])
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    staging = application("fraud-detector", "staging", "gpu-eu-1")
    standin.put("argocd", staging)
    run = cli_runner(capsys)
    assert run("--config", config, "status")[0] == 0
    standin.delete("argocd", staging["metadata"]["name"])
    code, _, err = run("--config", config, "status", "--env", "staging")
    assert code == 0 and "argocd.namespace" not in err
    assert _stored(state)[("fraud-detector", "staging")] == []
    assert _stored(state)[("fraud-detector", "production")] == ["gpu-eu-1"]


def test_an_application_deleted_while_watched_is_not_brought_back_by_a_late_report(
        cluster: dict, capsys) -> None:
    """The watch saw gpu-us-1's Application go (no finalizer: no deleted notification).
    It removed the row outright, so Argo CD's late retry of a report from before the deletion
    (a 503 answered earlier) stored it again; as with the deleted notification, a deletion
    mark keeps it out, and only a newer report counts."""
    standin, state = cluster["standin"], cluster["state"]
    standin.put("argocd", application("fraud-detector", "production", "gpu-eu-1"))
    us = application("fraud-detector", "production", "gpu-us-1", health="Progressing")
    standin.put("argocd", us)
    deleter = _once_watching(standin, lambda: standin.delete("argocd", us["metadata"]["name"]))
    code, out, err = cli_runner(capsys)("--config", str(cluster["config"]), "status",
                                        "--watch", "--for", "3", "--output", "json")
    deleter.join()
    assert code == 0, err
    last = json.loads(out.splitlines()[-1])
    assert (last["cluster"], last["deleted"]) == ("gpu-us-1", True)
    assert _told(state)[-1]["deployed"] is True
    store = StatusStore(state)
    handler = ArgoCDHookHandler(Secret("s3cret"), store, ClusterFeedback(
        store, StateLedger(state), AuditTrail(state)))
    status, answer = handler.handle({"X-Promoter-Token": "s3cret"},
                                    notification("health-degraded", us))
    assert status == 200 and answer["deployed"] is True, answer
    assert [r.cluster for r in store.rows("fraud-detector", "production")] == ["gpu-eu-1"]
    # The Application re-created and reconciled later counts again.
    status, answer = handler.handle({"X-Promoter-Token": "s3cret"}, notification(
        "health-degraded", application("fraud-detector", "production", "gpu-us-1",
                                       health="Degraded", reconciled_at="2024-03-05T08:00:00Z")))
    assert status == 200 and answer["deployed"] is False, answer
