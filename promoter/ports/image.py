"""Ports for the serving image: model files in, registry I/O, build-and-push, sign/verify.

Implemented by adapters (``ImageRegistry``: ``promoter.adapters.oci``; ``ModelSource``:
``promoter.adapters.mlflow``; ``WheelInstaller``: ``promoter.adapters.pip``; ``Sigstore``:
``promoter.adapters.oci_keyless``) and handed to the image and signing code (``promoter.image``,
``promoter.signing``) by the composition root. ``Blob`` lives here because it crosses the
registry seam in both directions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ChunkSource = Callable[[], Iterable[bytes]]
MODEL_URI_PREFIXES = ("models:/", "runs:/")


def model_version_uri(name: str, version: str) -> str:
    """The MLflow URI of one registered model version (what lineage records and what is
    downloaded: never an alias, which may move between the two)."""
    return f"models:/{name}/{version}"


def is_model_uri(text: str) -> bool:
    """An MLflow model URI (rather than a local model directory)."""
    return text.startswith(MODEL_URI_PREFIXES)


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes: a descriptor and, when we hold them, a way to read them."""

    media_type: str
    digest: str
    size: int
    chunks: ChunkSource | None = field(default=None, compare=False, repr=False)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class StoredManifest(Protocol):
    """A manifest as a registry returns it (bytes exactly as stored, so digests hold)."""

    @property
    def body(self) -> bytes: ...

    @property
    def media_type(self) -> str: ...

    @property
    def digest(self) -> str: ...


@dataclass(frozen=True)
class ModelLineage:
    """Where the model came from; becomes image labels."""

    source: str  # the MLflow model URI or local directory given by the user
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    # An immutable identity of the model's files (a registered version's MLflow source), which
    # lets a rebuild be recognised before downloading anything; None for mutable sources.
    content_id: str | None = None


@dataclass(frozen=True)
class CheckedVersion:
    """A registered model version as the promotion read and checked it. The image is built
    from these facts and labelled with them; MLflow is not asked about the version or its run
    again, so what is built is what policy checked."""

    model: str
    version: str
    source: str         # the version's MLflow source (names its immutable files)
    files: str          # where its files are (MLflow's download location for the version)
    run_id: str | None  # the run its files come from (core.lineage.run_of); None: none vouches


@dataclass(frozen=True)
class BuiltImage:
    reference: str  # REPOSITORY@sha256:…
    digest: str
    size: int  # manifest + config + layers, in bytes
    layers: list[str]  # layer digests, base first
    bytes_uploaded: int  # blob bytes sent by this build; 0 when nothing changed
    tag: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelcarRequest:
    """What shapes a modelcar besides the model's files: the layout under /models (the
    runtime descriptor's modelcarLayout) and, for Triton, the model's name, format and batch
    size."""

    layout: str                  # mlflow | huggingface | triton: the descriptor's modelcarLayout
    name: str                    # the deployment name (Triton's model directory)
    model_format: str = "onnx"   # triton: onnx | tensorrt
    max_batch_size: int = 0      # triton: 0 = no batching dimension


@dataclass(frozen=True)
class SignatureInfo:
    reference: str  # REPOSITORY@sha256:…
    digest: str
    formats: list[str]  # "bundle" (v3 referrer) and/or "legacy" (sha256-….sig tag)
    key_hint: str  # base64(sha256(SPKI DER)) of the signing key
    created: list[str] = field(default_factory=list)  # formats newly written (sign only)


class ImageBuilder(Protocol):
    def build(self, model_dir: Path, repository: str, *, base: str | None,
              labels: Mapping[str, str],
              lineage: ModelLineage | None = None) -> BuiltImage: ...


class Verifier(Protocol):
    @property
    def key_hint(self) -> str | None:
        """The configured public key's hint (as SignatureInfo.key_hint), or None when none is
        configured. A recorded verification is reused only under the same key: a retry after
        the verification key was replaced must be checked against the new one."""

    def verify(self, reference_with_digest: str) -> SignatureInfo:
        """The valid signatures over exactly this digest by the configured key(s); a UserError
        naming what is wrong (unsigned, another key, another digest, altered) otherwise."""


class Signer(Verifier, Protocol):
    def sign(self, reference_with_digest: str) -> SignatureInfo: ...


class ImageRegistry(Protocol):
    """One registry host, as image assembly, base images and signatures use it."""

    def get_manifest(self, repository: str, reference: str) -> StoredManifest | None: ...

    def manifest_digest(self, repository: str, reference: str) -> str | None: ...

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]: ...

    def get_blob(self, repository: str, digest: str, *, limit: int = ...) -> bytes: ...

    def push_blob(self, repository: str, blob: Blob, *, mount_from: str | None = None) -> int: ...

    def push_new_blob(self, repository: str, blob: Blob) -> tuple[str, int]:
        """Upload ``blob`` (size known, ``digest`` not yet: "") hashing it while sending;
        returns (digest, bytes sent)."""

    def blob_chunk_source(self, repository: str,
                          digest: str) -> Callable[[], Iterator[bytes]]: ...

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None: ...


# registry host → a client for it, closed when the context ends.
RegistryClients = Callable[[str], AbstractContextManager[ImageRegistry]]


class ModelSource(Protocol):
    """Where models come from (the MLflow registry): lineage first, files only when needed."""

    def resolve_model(self, uri: str) -> ModelLineage:
        """A model URI's lineage, read from MLflow (``promoter image build``)."""

    def checked_lineage(self, version: CheckedVersion) -> ModelLineage:
        """The lineage of a version whose facts were already read: no MLflow call."""

    def download_model(self, uri: str, destination: Path) -> Path: ...


class WheelInstaller(Protocol):
    """Installs requirements as binary wheels for another platform into ``target``."""

    def install(self, requirements: Path, target: Path, *, platforms: Sequence[str],
                python_version: str, options: Sequence[str]) -> None: ...


class Sigstore(Protocol):
    """Fulcio (short-lived certificates) and Rekor (transparency log) for keyless signing."""

    def signing_certificate(self, token: str, public_pem: str, proof: bytes) -> list[str]: ...

    def log_dsse(self, envelope: bytes, certificate_pem: str) -> dict[str, Any]: ...
