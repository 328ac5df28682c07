"""Application objects → per-cluster rows → the environment's status and "deployed"."""

from __future__ import annotations

import json

import pytest

from promoter.core.cluster_status import (
    from_application,
    from_notification,
    observed_at,
    summarise,
)
from promoter.core.gitops_scaffold import CLUSTER_ANNOTATION, CLUSTER_LABEL
from promoter.errors import UserError
from tests.argocd.applications import REVISION, application, notification


def test_rows_from_argo_cds_application_object() -> None:
    row = from_application(application("fraud-detector", "production", "gpu-eu-1"))
    assert row is not None
    assert (row.name, row.env, row.cluster) == ("fraud-detector", "production", "gpu-eu-1")
    assert (row.sync, row.health, row.revision) == ("Synced", "Healthy", REVISION)
    assert row.since == "2024-03-05T07:33:04Z"


def test_applications_not_made_by_promoter_are_ignored() -> None:
    app = application("fraud-detector", "production", "gpu-eu-1")
    del app["metadata"]["labels"]
    assert from_application(app) is None


def test_deployed_only_when_every_cluster_is_synced_and_healthy_at_one_revision() -> None:
    def rows(*apps: dict) -> list:
        return [from_application(a) for a in apps]

    healthy = [application("m", "production", c) for c in ("a", "b")]
    assert summarise(rows(*healthy)).deployed
    assert summarise(rows(*healthy), lambda revision: revision == REVISION).deployed
    assert not summarise(rows(*healthy), lambda revision: False).deployed
    degraded = summarise(rows(healthy[0], application("m", "production", "b",
                                                      health="Degraded")))
    assert not degraded.deployed and degraded.health == "Degraded"
    split = summarise(rows(healthy[0], application("m", "production", "b", revision="c" * 40)))
    assert not split.deployed and split.revision is None
    out_of_sync = summarise(rows(healthy[0], application("m", "production", "b",
                                                         sync="OutOfSync")))
    assert out_of_sync.sync == "OutOfSync" and "status" not in out_of_sync.tags()
    assert summarise(rows(*healthy)).tags()["status"] == "deployed"
    assert summarise(rows(*healthy)).note().startswith("synced to a, b; healthy")


def test_clusters_at_different_revisions_that_contain_the_change_are_deployed() -> None:
    """status.sync.revision is HEAD when Argo CD compared: other models' merges move it."""
    merge, later, older = REVISION, "d" * 40, "e" * 40
    contains = {merge: True, later: True, older: False}.__getitem__
    at_merge, at_later, at_older = (from_application(application("m", "production", c,
                                                                  revision=r))
                                    for c, r in (("a", merge), ("b", later), ("b", older)))
    assert at_merge and at_later and at_older
    assert summarise([at_merge, at_later], contains).deployed
    assert not summarise([at_merge, at_older], contains).deployed


def test_notification_rendered_from_the_shipped_template_parses() -> None:
    body = notification("sync-succeeded", application("llm-chat", "staging", "gpu-stg-1"))
    parsed = from_notification(json.loads(body))
    assert parsed.event == "sync-succeeded"
    assert parsed.status.cluster == "gpu-stg-1"
    assert parsed.status.revision == REVISION


def test_both_paths_date_a_row_by_when_argo_cd_compared() -> None:
    """One observation time for a listing and a notification of the same state: reconciledAt,
    normalised to UTC, even when the last sync operation finished at another time."""
    app = application("llm-chat", "staging", "gpu-stg-1", reconciled_at="2024-03-05T09:33:04+02:00")
    app["status"]["operationState"]["finishedAt"] = "2024-03-05T07:40:00Z"
    listed = from_application(app)
    notified = from_notification(json.loads(notification("health-healthy", app))).status
    assert listed is not None
    assert listed.since == notified.since == "2024-03-05T07:33:04Z"


def test_notification_with_a_time_that_is_not_rfc_3339_is_refused() -> None:
    app = application("llm-chat", "staging", "gpu-stg-1", reconciled_at="yesterday")
    with pytest.raises(UserError, match="reconciledAt must be an RFC 3339 time"):
        from_notification(json.loads(notification("sync-succeeded", app)))


def test_notification_of_an_unlabelled_application_is_refused() -> None:
    app = application("llm-chat", "staging", "gpu-stg-1")
    app["metadata"]["labels"] = {"team": "nlp"}
    with pytest.raises(UserError, match="model, environment and application"):
        from_notification(json.loads(notification("sync-failed", app)))


@pytest.mark.parametrize("value", [
    "0001-01-01T00:00:00+01:00",   # before datetime's minimum in UTC: OverflowError
    "9999-12-31T23:30:00-01:00",   # after its maximum
    "0999-01-01T00:00:00Z",        # would be stored as '999-…', after every real time as text
    "1999-12-31T23:59:59Z",        # before Argo CD (and promoter) existed
    "2200-01-01T00:00:00Z"])       # a stored far-future time would outrank every later report
def test_a_time_outside_the_plausible_years_is_no_time(value: str) -> None:
    assert observed_at(value) is None
    app = application("llm-chat", "staging", "gpu-stg-1", reconciled_at=value,
                      health_changed_at=value)
    listed = from_application(app)
    assert listed is not None and (listed.since, listed.health_changed_at) == (None, None)
    with pytest.raises(UserError, match="reconciledAt must be an RFC 3339 time"):
        from_notification(json.loads(notification("sync-succeeded", app)))
    # healthChangedAt is optional (older templates do not send it): such a one is not sent.
    app["status"]["reconciledAt"] = "2024-03-05T07:33:04Z"
    notified = from_notification(json.loads(notification("sync-succeeded", app))).status
    assert (notified.since, notified.health_changed_at) == ("2024-03-05T07:33:04Z", None)


def test_observation_times_are_text_ordered_with_four_digit_years() -> None:
    assert observed_at("2000-01-01T00:00:00+01:00") is None   # 1999 in UTC
    assert observed_at("2000-01-01T01:00:00+01:00") == "2000-01-01T00:00:00Z"
    assert observed_at("2199-12-31T23:59:59.5Z") == "2199-12-31T23:59:59Z"
    assert str(observed_at("2000-01-01T00:00:00Z")) < str(observed_at("2024-03-05T07:33:04Z"))


def test_an_application_with_the_cluster_only_as_a_label_is_one_cluster_in_both_paths() -> None:
    """Applications generated before the cluster became an annotation carry it as a label.
    The listing read it, the notification did not (`<no value>`, then the server URL): one
    cluster stored under two keys, a phantom that kept `deployed` away."""
    app = application("fraud-detector", "production", "gpu-eu-1")
    del app["metadata"]["annotations"][CLUSTER_ANNOTATION]
    app["metadata"]["labels"][CLUSTER_LABEL] = "gpu-eu-1"
    listed = from_application(app)
    notified = from_notification(json.loads(notification("sync-succeeded", app))).status
    assert listed is not None and listed.cluster == notified.cluster == "gpu-eu-1"
    # Both set (a label left over): the annotation, the current one, wins in both.
    app["metadata"]["annotations"][CLUSTER_ANNOTATION] = "gpu-eu-2"
    listed = from_application(app)
    notified = from_notification(json.loads(notification("sync-succeeded", app))).status
    assert listed is not None and listed.cluster == notified.cluster == "gpu-eu-2"
    # Neither: the destination server, in both.
    del app["metadata"]["annotations"][CLUSTER_ANNOTATION]
    del app["metadata"]["labels"][CLUSTER_LABEL]
    listed = from_application(app)
    notified = from_notification(json.loads(notification("sync-succeeded", app))).status
    assert listed is not None
    assert listed.cluster == notified.cluster == "https://gpu-eu-1.clusters.internal"
