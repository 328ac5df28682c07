"""Whether an artifact URI is under a root: the one rule behind mlflow.artifact_roots and run
lineage. A version's source is chosen by whoever registered it and promoter reads it with its
own credentials, so anything a store could decode or normalise out of the root is refused."""

from __future__ import annotations

import pytest

from promoter.core.uri_scope import is_within, names_a_directory, root_problem

# Roots in every form mlflow.artifact_roots documents: whole scheme, whole bucket (with and
# without a trailing slash), a directory in a bucket, local and other stores' directories.
ROOTS = ["mlflow-artifacts:", "s3://ml-artifacts", "s3://ml-artifacts/", "s3://ml-artifacts/team-a",
         "s3://ml-artifacts/team-a/", "file:///srv/mlruns", "/srv/mlruns", "gs://models/prod",
         "dbfs:/databricks/mlflow", "dbfs:", "mlflow-artifacts://tracking:5000",
         "sftp://files.example/mlruns", "hdfs://namenode:8020/user/mlflow", "file://nas/srv/mlruns"]


@pytest.mark.parametrize(("uri", "root"), [
    ("mlflow-artifacts:/1/0a1b/artifacts/model", "mlflow-artifacts:"),
    ("mlflow-artifacts:/1/0a1b/artifacts/model", "MLflow-Artifacts:"),   # schemes are case-free
    ("mlflow-artifacts:///1/0a1b/artifacts/model", "mlflow-artifacts:"),
    ("s3://ml-artifacts/team-a/1/r/artifacts/model", "s3://ml-artifacts"),
    ("s3://ml-artifacts/team-a/1/r/artifacts/model", "s3://ml-artifacts/"),
    ("s3://ml-artifacts/team-a/1/r/artifacts/model", "s3://ml-artifacts/team-a"),
    ("s3://ml-artifacts/team-a/1/r/artifacts/model/", "s3://ml-artifacts/team-a/"),
    ("S3://ml-artifacts/team-a/model", "s3://ml-artifacts/team-a"),
    ("s3://ml-artifacts/team-a", "s3://ml-artifacts/team-a/"),        # the root itself
    ("s3://ml-artifacts", "s3://ml-artifacts/"),
    ("file:///srv/mlruns/1/r/artifacts/model", "file:///srv/mlruns"),
    ("/srv/mlruns/1/r/artifacts/model", "file:///srv/mlruns"),        # MLflow's bare paths
    ("file:/srv/mlruns/1/r/artifacts/model", "/srv/mlruns"),
    ("file://localhost/srv/mlruns/1/r", "file:///srv/mlruns/"),
    # MLflow reads a file URI's path alone, whatever the host (local_file_uri_to_path)
    ("file://fileserver/srv/mlruns/x", "file:///srv/mlruns"),
    ("file:///srv/mlruns/x", "file://fileserver/srv/mlruns"),
    ("gs://models/prod/fraud/3", "gs://models/prod"),
    ("dbfs:/databricks/mlflow/1/r/artifacts/model", "dbfs:/databricks/mlflow"),
    ("s3://ml-artifacts/team-a/model.v1..2/a-b_c~d", "s3://ml-artifacts/team-a"),  # '..' inside
])
def test_legitimate_uris_are_within_their_root(uri: str, root: str) -> None:
    assert is_within(uri, root) is True


@pytest.mark.parametrize("uri", [
    # percent escapes: some stores (and MLflow's HTTP proxy) decode them into '..' and '/'
    "s3://ml-artifacts/%2e%2e/other-team/model",
    "s3://ml-artifacts/team-a/%2e%2e/team-b/model",
    "s3://ml-artifacts/team-a/..%2f..%2fteam-b",
    "mlflow-artifacts:/x/..%2f..%2fy",
    "mlflow-artifacts:/x/%2E%2E/y",
    "s3://ml-artifacts/team-a/%252e%252e/y",
    # dot segments: resolved by path-normalising stores and local files
    "s3://ml-artifacts/team-a/./../../x",
    "s3://ml-artifacts/team-a/../team-b/model",
    "s3://ml-artifacts/team-a/..",
    "s3://ml-artifacts/team-a/.",
    "mlflow-artifacts:/../../etc",
    "/srv/mlruns/../../etc/passwd",
    "file:///srv/mlruns/1/../../../etc",
    # empty segments: a different key in some stores, collapsed in others
    "s3://ml-artifacts//..",
    "s3://ml-artifacts//team-a/model",
    "s3://ml-artifacts/team-a//model",
    # query, fragment: cut off by URL-parsing stores
    "s3://ml-artifacts/team-a/model?versionId=1",
    "s3://ml-artifacts/team-a/model#../../team-b",
    "mlflow-artifacts:/team-a?/../../team-b",
    # backslashes, whitespace, control characters
    "s3://ml-artifacts/team-a\\..\\..\\team-b",
    "s3://ml-artifacts/team-a/ model",
    "s3://ml-artifacts/team-a/model\n",
    "s3://ml-artifacts/team-a/\x00model",
    "s3://ml-artifacts/team-a/\tmodel",
    # no scheme, relative, empty
    "ml-artifacts/team-a/model",
    "team-a/model",
    "",
])
@pytest.mark.parametrize("root", ["s3://ml-artifacts/", "s3://ml-artifacts/team-a",
                                  "mlflow-artifacts:", "/srv/mlruns"])
def test_uris_a_store_could_read_elsewhere_are_never_within(uri: str, root: str) -> None:
    assert is_within(uri, root) is False


@pytest.mark.parametrize(("uri", "root"), [
    ("s3://ml2/model", "s3://ml"),                       # a bucket is a whole name
    ("s3://ml2/model", "s3://ml/"),
    ("s3://ml-artifacts/team-evil/model", "s3://ml-artifacts/team"),   # a segment, not a prefix
    ("s3://ml-artifacts/team-a-evil", "s3://ml-artifacts/team-a/"),
    ("s3://ml-artifacts/team", "s3://ml-artifacts/team/a"),            # the parent
    ("s3://other-bucket/team-a/model", "s3://ml-artifacts/"),
    ("gs://ml-artifacts/team-a/model", "s3://ml-artifacts/"),          # another store
    ("s3://ml-artifacts/team-a/model", "mlflow-artifacts:"),
    ("mlflow-artifacts://evil:5000/1/r/artifacts", "mlflow-artifacts:"),  # another server
    ("mlflow-artifacts://evil:5000/1/r/artifacts", "mlflow-artifacts:/1/r"),
    ("s3://user@ml-artifacts/team-a/model", "s3://ml-artifacts/"),
    ("s3://ML-ARTIFACTS/team-a/model", "s3://ml-artifacts/"),          # hosts compare exactly
    # a file root's host does not narrow it: MLflow reads file://nas/etc/passwd as /etc/passwd
    ("file://nas/etc/passwd", "file://nas/srv/mlruns"),
    ("file://nas/etc/passwd", "file://nas/srv"),
    ("//etc/srv/mlruns/x", "/srv/mlruns"),                # MLflow reads the path //etc/srv/…
    ("FILE:///srv/mlruns/x", "/srv/mlruns"),              # MLflow reads it relative to its cwd
    ("/srv/mlruns-evil/x", "/srv/mlruns"),
    ("/srv/mlruns/1/r/x", ""),
    ("/srv/mlruns/1/r/x", "srv/mlruns"),
    ("s3://ml-artifacts/team-a/x", "s3://ml-artifacts/%74eam-a"),     # a root is not decoded
])
def test_other_places_are_not_within(uri: str, root: str) -> None:
    assert is_within(uri, root) is False


@pytest.mark.parametrize("root", ROOTS)
def test_every_documented_root_form_is_a_valid_root(root: str) -> None:
    assert root_problem(root) is None


@pytest.mark.parametrize("root", ["s3://ml-artifacts/../x", "s3://ml-artifacts//team",
                                  "s3://ml-artifacts/%2e", "ml-artifacts/team-a", "",
                                  "s3://ml-artifacts/team-a?x"])
def test_a_root_that_would_hold_nothing_is_a_problem(root: str) -> None:
    problem = root_problem(root)
    assert problem and "'..'" in problem and "'%'" in problem


@pytest.mark.parametrize(("root", "says"), [
    ("s3:", "s3://BUCKET/"), ("s3://", "s3://BUCKET/"), ("gs:", "gs://BUCKET/"),
    ("wasbs://", "wasbs://BUCKET/"),
    ("/", "whole local filesystem"), ("file:", "is not a root"),
    ("file:///", "whole local filesystem"), ("file://localhost/", "whole local filesystem"),
    # A host on file: is ignored by MLflow: still the whole local filesystem.
    ("file://nas/", "whole local filesystem"), ("file://nas", "whole local filesystem"),
    # Stores that need a host or bucket, beyond the well-known object stores: a host-less
    # root names nothing (sftp:, ftp:) or what the reader's config says (hdfs:, viewfs:).
    ("sftp:", "sftp://BUCKET/"), ("ftp://", "ftp://BUCKET/"), ("hdfs:", "hdfs://BUCKET/"),
    ("hdfs:///user/mlflow", "hdfs://BUCKET/"), ("viewfs:", "viewfs://BUCKET/"),
    ("https:", "https://BUCKET/"), ("models:", "models://BUCKET/"),
])
def test_a_root_that_names_no_bucket_or_is_the_whole_filesystem_is_a_problem(
        root: str, says: str) -> None:
    """Under the string-prefix rule of before, ``s3:`` held all of S3; under segments it would
    hold nothing, and ``/`` would hold promoter's own secrets (/var/run/secrets)."""
    problem = root_problem(root)
    assert problem is not None and says in problem


def test_a_relative_file_uri_is_never_within_an_absolute_root() -> None:
    """MLflow reads ``file:srv/mlruns/x`` relative to its working directory."""
    assert is_within("file:srv/mlruns/x", "/srv/mlruns") is False
    assert is_within("file:srv/mlruns/x", "file:///srv/mlruns") is False
    assert is_within("file:/srv/mlruns/x", "/srv/mlruns") is True


@pytest.mark.parametrize(("uri", "directory"), [
    ("s3://b/1/r/artifacts", True), ("mlflow-artifacts:/1/r/artifacts", True),
    ("s3://b", False), ("s3://b/", False), ("mlflow-artifacts:", False), ("file:///", False),
    ("s3://b/%2e%2e", False), ("", False),
])
def test_names_a_directory_is_false_for_a_whole_store(uri: str, directory: bool) -> None:
    assert names_a_directory(uri) is directory
