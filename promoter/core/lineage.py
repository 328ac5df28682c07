"""Whether a model version's files come from the run it names.

MLflow lets whoever registers a version name any ``run_id`` next to any ``source``: its server
checks the pair only for ``file://`` sources. Promoter builds the image from the source and
gates on the run's metrics, so a run that logged ``auc=0.99`` could vouch for files it never
produced. A run's facts are used only when the version's source belongs to that run:

- ``runs:/<run_id>/<path>`` with the same run id;
- ``models:/m-<id>``, an MLflow 3 logged model whose ``source_run_id`` is that run;
- ``models:/<name>/<version>`` (what ``copy_model_version`` writes), when that version names
  the same run and its own source belongs to it;
- a URI inside the run's ``artifact_uri`` (MLflow 2 registrations:
  ``s3://bucket/<exp>/<run_id>/artifacts/model``), by ``uri_scope.is_within``.

Pure: the registry lookups go through the Registry port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promoter.core.masking import without_url_credentials
from promoter.core.uri_scope import is_plain_path, is_within, names_a_directory
from promoter.errors import PermanentError
from promoter.ports.image import CheckedVersion
from promoter.ports.registry import ModelVersionInfo, Registry, RunInfo

_RUNS_URI = re.compile(r"^runs:/(?P<run>[0-9A-Za-z]+)(?:/(?P<path>.*))?$")
_LOGGED_MODEL_URI = re.compile(r"^models:/(?P<id>m-[0-9A-Za-z]+)/?$")
_REGISTERED_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
# copy_model_version chains are short; a longer one (or a loop) is not followed.
MAX_COPY_DEPTH = 4


def runs_uri_run_id(source: str) -> str | None:
    """The run a ``runs:/<run_id>/<path>`` URI names (None for other URIs, and for a path
    that climbs out of the run with ``..``)."""
    found = _RUNS_URI.fullmatch(source)
    if found is None or not is_plain_path(found["path"] or ""):
        return None
    return found["run"]


def logged_model_id(source: str) -> str | None:
    """The MLflow 3 logged model id of a ``models:/m-<id>`` URI, else None."""
    found = _LOGGED_MODEL_URI.fullmatch(source)
    return found["id"] if found else None


def registered_version(source: str) -> tuple[str, str] | None:
    """(name, version) of a ``models:/<name>/<version>`` URI, else None."""
    found = _REGISTERED_VERSION_URI.fullmatch(source)
    return (found["name"], found["version"]) if found else None


def source_belongs_to_run(source: str, run_id: str, *, run_artifact_uri: str,
                          logged_model_run_id: str | None = None) -> bool:
    """The lineage rule for the forms that need no further lookup; ``logged_model_run_id``
    is the ``source_run_id`` of the logged model a ``models:/m-<id>`` source names."""
    if source.startswith("runs:"):
        return runs_uri_run_id(source) == run_id
    if logged_model_id(source) is not None:
        return logged_model_run_id is not None and logged_model_run_id == run_id
    return _is_a_run_directory(run_artifact_uri) and is_within(source, run_artifact_uri)


def foreign_source(source: str, run_id: str) -> str:
    """What a gate says when the version's files are not from its run. The source is quoted
    without its credentials (``https://user:password@…``, a presigned URL's signature): this
    text becomes the denial, which lands in the MLflow reason tag, the MR, the job's steps and
    the hash-sealed audit trail, where nothing can take it out again. Masked before it is cut
    short, so a cut never leaves the start of a password the mask no longer recognises."""
    quoted = without_url_credentials(source)[:200]
    return (f"the version's files at {quoted!r} are not from run {run_id}; register "
            "the model from the run that validated it (runs:/<run_id>/<path>, or log_model in "
            "that run)")


@dataclass(frozen=True)
class RunOfVersion:
    """The run whose facts describe a version's files (None without one), or why the run the
    version names is not trusted (``doubt``; then ``run`` is None)."""

    run: RunInfo | None
    doubt: str | None = None


def run_of(registry: Registry, info: ModelVersionInfo) -> RunOfVersion:
    """The version's run when its source belongs to it (the only run gates may read)."""
    if not info.run_id:
        return RunOfVersion(None)
    run = registry.run(info.run_id)
    if _belongs(registry, info.source, run, MAX_COPY_DEPTH):
        return RunOfVersion(run)
    return RunOfVersion(None, foreign_source(info.source, info.run_id))


def checked_version(registry: Registry, info: ModelVersionInfo,
                    origin: RunOfVersion) -> CheckedVersion:
    """What the image is built from and labelled with: the version and run policy checked
    (``origin``), and where the version's files are. The build reads neither again, so it
    cannot label the image with another run, or one that no longer vouches."""
    return CheckedVersion(model=info.model, version=info.version, source=info.source,
                          files=registry.artifact_location(info.model, info.version),
                          run_id=origin.run.run_id if origin.run else None)


def _belongs(registry: Registry, source: str, run: RunInfo, depth: int) -> bool:
    if (copied := registered_version(source)) is not None:
        if depth <= 0:
            return False
        try:
            origin = registry.model_version(*copied)
        except PermanentError:   # a version that is gone vouches for nothing
            return False
        return origin.run_id == run.run_id and _belongs(registry, origin.source, run, depth - 1)
    producer = None
    if (model_id := logged_model_id(source)) is not None:
        try:
            producer = registry.logged_model_run_id(model_id)
        except PermanentError:   # no such logged model: nothing ties it to the run
            return False
    return source_belongs_to_run(source, run.run_id, run_artifact_uri=run.artifact_uri,
                                 logged_model_run_id=producer)


def _is_a_run_directory(run_artifact_uri: str) -> bool:
    """Whether a run's ``artifact_uri`` names a directory of its own. MLflow always puts a
    run's artifacts at ``<experiment location>/<run_id>/artifacts``; one that is a whole bucket
    or scheme (``s3://b``, ``mlflow-artifacts:``) is degenerate and would let the run vouch for
    everything stored there."""
    return names_a_directory(run_artifact_uri)
