"""Model files in MLflow: listing and downloading artifacts, and telling model URIs
(``models:/name/7``, ``models:/name@alias``, ``runs:/id/path``) apart.

Where a model version's files are is its ``source``, which whoever registered it chose, and
promoter reads it with its own credentials (cloud identity, local files of its pod). With
``mlflow.artifact_roots`` set, only URIs under those roots are listed or downloaded, so a
version cannot make promoter copy another team's bucket or its own secrets into an image
("under" is ``core.uri_scope.is_within``: whole segments, nothing a store could decode or
normalise out of the root).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from promoter.adapters.mlflow.client import Connection
from promoter.core.lineage import runs_uri_run_id
from promoter.core.uri_scope import is_within
from promoter.errors import UserError

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
_RUNS_URI = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z]+)/.+$")


class Artifacts:
    def __init__(self, connection: Connection, roots: tuple[str, ...] | None = None) -> None:
        self._mlflow = connection
        self._roots = roots

    def listing(self, directory: str) -> set[str]:
        """File names (not directories) directly under an artifact directory."""
        return set(self.sizes(directory))

    def sizes(self, directory: str) -> dict[str, int | None]:
        """File name → size in bytes (None where the store does not say), for the files
        directly under an artifact directory."""
        from mlflow.artifacts import list_artifacts

        directory = self._allowed(directory)
        found = self._mlflow.call(f"list {directory}", lambda: list_artifacts(
            artifact_uri=directory, tracking_uri=self._mlflow.uri))
        return {PurePosixPath(entry.path).name: entry.file_size
                for entry in found or [] if not entry.is_dir}

    def download(self, artifact_uri: str, into: str) -> str:
        from mlflow.artifacts import download_artifacts

        artifact_uri = self._allowed(artifact_uri)
        return self._mlflow.call(f"download {artifact_uri}", lambda: str(download_artifacts(
            artifact_uri=artifact_uri, dst_path=into, tracking_uri=self._mlflow.uri)))

    # -- the ModelSource port (resolving a URI's lineage is the registry's: MlflowRegistry)
    def download_model(self, uri: str, destination: Path) -> Path:
        """The model's files, downloaded into ``destination``."""
        destination.mkdir(parents=True, exist_ok=True)
        return Path(self.download(self._download_uri(uri), str(destination)))

    def _allowed(self, uri: str) -> str:
        """``uri`` (a ``runs:/`` URI resolved to the run's artifact location first), when it
        is under one of the allowed roots; UserError otherwise."""
        if self._roots is None:
            return uri
        if found := _RUNS_URI.fullmatch(uri):
            run = self._mlflow.call(f"read run {found['run']}",
                                    lambda: self._mlflow.client.get_run(found["run"]))
            uri = f"{(run.info.artifact_uri or '').rstrip('/')}/{uri.split('/', 2)[2]}"
        if not any(is_within(uri, root) for root in self._roots):
            raise UserError(f"model files at {uri[:200]!r} are outside mlflow.artifact_roots "
                            f"({', '.join(self._roots)})",
                            hint="register the version from a run logged under an allowed "
                                 "artifact root, or add its root to mlflow.artifact_roots")
        return uri

    def _download_uri(self, uri: str) -> str:
        """Where a models:/ URI's files are, asked of this registry: MLflow resolves models:/
        inside download_artifacts with the process-wide registry URI rather than the one
        passed in, so a process configured only through promoter.yaml would look elsewhere."""
        found = _MODELS_URI.fullmatch(uri)
        if found is None:
            return uri
        client = self._mlflow.client
        version = found["version"] or str(self._mlflow.call(
            f"resolve {uri}",
            lambda: client.get_model_version_by_alias(found["name"], found["alias"])).version)
        return str(self._mlflow.call(
            f"locate the files of {uri}",
            lambda: client.get_model_version_download_uri(found["name"], version)))


def registered_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version number) of ``models:/name/7`` or ``models:/name@alias``, else
    None."""
    found = _MODELS_URI.fullmatch(uri)
    return (found["name"], found["alias"], found["version"]) if found else None


def run_model_uri(uri: str) -> str | None:
    """The run a ``runs:/RUN_ID/PATH`` URI names, else None (also for a PATH that climbs out
    of the run: lineage's rule)."""
    return runs_uri_run_id(uri) if _RUNS_URI.fullmatch(uri) else None

