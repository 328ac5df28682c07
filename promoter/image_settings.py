"""The promoter.yaml section for images: where they are built from, pushed to and how they are
signed (``image:``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from promoter.image.platform import parse_platform, platform_problem
from promoter.settings_section import Section as _Section


class ImageSettings(_Section):
    base: str | None = None
    repository: str | None = Field(
        default=None, description="where images are pushed; {name} is the deployment name")
    modelcar_repository: str | None = Field(
        default=None, description="where modelcars (kserve, vllm, triton) are pushed; {name} "
                                  "is the deployment name; default: image.repository")
    modelcar_base: str | None = Field(
        default=None, description="optional base under the model files of a modelcar, e.g. a "
                                  "busybox pinned by digest (KServe's modelcar sidecar runs sh)")
    insecure_registries: list[str] = Field(default_factory=list)
    upload_chunk_mib: int = Field(
        default=0, ge=0,
        description="send each blob in PATCHes of at most this many MiB (for a proxy that caps "
                    "request bodies); 0: the whole blob in one PATCH, as docker and skopeo do")
    oci_layout: Path | None = Field(
        default=None, description="write images to this OCI image layout instead of pushing")
    platform: str = Field(
        default="linux/amd64",
        description="os/arch or os/arch/variant of the image, e.g. linux/arm64 or linux/arm/v7 "
                    "(picks the base's platform manifest and the wheels)")
    python_version: str | None = Field(
        default=None, pattern=r"^3\.\d+$",
        description="Python of the base image for dependency wheels; default: base's "
                    "PYTHON_VERSION env, else this machine's")
    pip_options: list[str] = Field(
        default_factory=list, description="extra pip options, e.g. --index-url URL")
    auth_file: Path | None = Field(
        default=None, description="registry auth file (docker/skopeo login format); "
                                  "default ~/.docker/config.json")
    signing_key: Path | None = Field(default=None, description="cosign.key for image sign")
    verification_key: Path | None = Field(default=None,
                                          description="cosign.pub for image verify")
    signature_formats: tuple[Literal["bundle", "legacy"], ...] = Field(
        default=("bundle", "legacy"), min_length=1,
        description="cosign v3 bundle referrer and/or legacy sha256-<hex>.sig tag")
    fulcio_url: str = Field(default="https://fulcio.sigstore.dev",
                            description="Sigstore CA for `image sign --keyless`")
    rekor_url: str = Field(default="https://rekor.sigstore.dev",
                           description="Sigstore transparency log for `image sign --keyless`")
    demo: bool = Field(default=False, description="demo and tests only: build the pyfunc image "
                       "without a base; it cannot start as a container")

    @field_validator("platform")
    @classmethod
    def _platform_form(cls, value: str) -> str:
        # Normalised here (x86_64 → amd64, aarch64 → arm64, as containerd does), so every
        # reader of the setting and every digest sees one spelling.
        problem = platform_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return str(parse_platform(value))

    @model_validator(mode="after")
    def _layout_holds_no_signature(self) -> ImageSettings:
        # A cosign signature lives in a registry next to the image. An OCI layout holds none,
        # so a promotion would open its MR with an unsigned image: refused, not done silently.
        if self.oci_layout is not None and (self.signing_key or self.verification_key):
            raise ValueError("image.oci_layout writes images to a directory, where nothing is "
                             "signed or verified: unset image.signing_key and "
                             "image.verification_key, or push to a registry instead")
        return self
