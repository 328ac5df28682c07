"""Ports for the serving image: build-and-push, and sign/verify (cosign formats)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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
class BuiltImage:
    reference: str  # REPOSITORY@sha256:…
    digest: str
    size: int  # manifest + config + layers, in bytes
    layers: list[str]  # layer digests, base first
    bytes_uploaded: int  # blob bytes sent by this build; 0 when nothing changed
    tag: str | None = None
    notes: list[str] = field(default_factory=list)


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
    def verify(self, reference_with_digest: str) -> SignatureInfo:
        """The valid signatures over exactly this digest by the configured key(s); a UserError
        naming what is wrong (unsigned, another key, another digest, altered) otherwise."""


class Signer(Verifier, Protocol):
    def sign(self, reference_with_digest: str) -> SignatureInfo: ...
