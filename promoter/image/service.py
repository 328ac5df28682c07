"""The ImageBuilder port implemented: model source + registry clients + assembly + push.

The I/O comes in through ports (``RegistryClients`` for registries, ``ModelSource`` for MLflow);
the composition root supplies the adapters, so nothing here imports them.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from promoter.core.naming import derive_name
from promoter.errors import UsageError, UserError
from promoter.image.base import BaseImage, load_base
from promoter.image.builder import (
    BuildOptions,
    BuildProgress,
    ImageTarget,
    assemble,
    push,
    source_inputs,
)
from promoter.image.existing import PushedImages, find_pushed
from promoter.image.layout import LayoutTarget
from promoter.image.lineage import read_run_id
from promoter.image.model_input import model_input
from promoter.image.platform import Platform, parse_platform
from promoter.image.reference import Reference, check_tag, parse_reference
from promoter.image.targets import RegistryTarget
from promoter.image_settings import ImageSettings
from promoter.ports.image import (
    BuiltImage,
    CheckedVersion,
    ImageRegistry,
    ModelLineage,
    ModelSource,
    RegistryClients,
    WheelInstaller,
)
from promoter.settings import Settings


class DaemonlessImageBuilder:
    """Builds without a Docker daemon; pushes to ``repository`` or writes ``layout``."""

    def __init__(self, settings: ImageSettings, state_dir: Path, clients: RegistryClients,
                 installer: WheelInstaller, *, layout: Path | None = None,
                 progress: BuildProgress | None = None) -> None:
        self.settings = settings
        self.progress = progress or BuildProgress()
        self.cache_dir = state_dir / "image-cache"
        self.pushed = PushedImages(state_dir)  # what may be reused: only promoter's own pushes
        self.layout = layout
        self._clients = clients
        self._installer = installer

    def _client(self, registry: str) -> AbstractContextManager[ImageRegistry]:
        return self._clients(registry)

    def _target(self, repository: str) -> Reference:
        target = parse_reference(repository)
        if target.tag or target.digest:
            raise UserError(f"--repository {repository!r} must not carry a tag or digest",
                            hint="promoter tags the image itself (v<model version>)")
        return target

    def _prepare(self, base: str | None, notes: list[str],
                 stack: ExitStack) -> tuple[BaseImage | None, BuildOptions]:
        platform = parse_platform(self.settings.platform)
        base_image = self._base(base or self.settings.base, platform, notes, stack)
        return base_image, BuildOptions(platform, self._python(base_image, notes),
                                        tuple(self.settings.pip_options), self.cache_dir,
                                        self._installer, self.progress)

    @staticmethod
    def _tag(tag: str | None, lineage: ModelLineage) -> str:
        # The tag becomes a URL path segment (/v2/<repo>/manifests/<tag>): checked here, for
        # every caller, not only the CLI.
        return check_tag(tag, "--tag") if tag else (
            f"v{lineage.version}" if lineage.version else "latest")

    def find_existing(self, repository: str, *, base: str | None, labels: Mapping[str, str],
                      lineage: ModelLineage, tag: str | None = None,
                      notes: list[str] | None = None) -> BuiltImage | None:
        """The image promoter already pushed from the same inputs, found without downloading
        the model; None when there is none, it is not promoter's (why: in ``notes``) or the
        source is mutable."""
        if lineage.content_id is None or self.layout is not None:
            return None
        target = self._target(repository)
        context: list[str] = []  # build() says these again when it runs
        with ExitStack() as stack:
            base_image, options = self._prepare(base, context, stack)
        wanted = source_inputs(lineage, base_image, labels, options)
        tag = self._tag(tag, lineage)
        with self._client(target.api_host) as client:
            return find_pushed(client, target, tag, wanted, self.pushed, context=context,
                               rejected=notes)

    def build(self, model_dir: Path, repository: str, *, base: str | None,
              labels: Mapping[str, str], lineage: ModelLineage | None = None,
              tag: str | None = None, notes: list[str] | None = None) -> BuiltImage:
        if not (model_dir / "MLmodel").is_file():
            raise UserError(f"{model_dir} is not an MLflow model directory (no MLmodel file)",
                            hint="pass a models:/ or runs:/ URI, or a directory saved by "
                                 "mlflow.<flavor>.save_model")
        target_ref = self._target(repository)
        lineage = lineage or ModelLineage(source=str(model_dir), run_id=read_run_id(model_dir))
        notes = [] if notes is None else notes
        with ExitStack() as stack:  # base registry clients stay open: layers stream from them
            base_image, options = self._prepare(base, notes, stack)
            image = assemble(model_dir, lineage, base_image, labels, options)
            tag = self._tag(tag, lineage)
            if self.layout is not None:
                uploaded = push(image, LayoutTarget(self.layout), tag, self.progress)
            else:
                client = stack.enter_context(self._client(target_ref.api_host))
                target: ImageTarget = RegistryTarget(client, target_ref)
                uploaded = push(image, target, tag, self.progress)
                self.pushed.record(source_inputs(lineage, base_image, labels, options),
                                   image.digest)
        return BuiltImage(reference=f"{target_ref.name}@{image.digest}", digest=image.digest,
                          size=image.size, layers=[x.blob.digest for x in image.layers],
                          bytes_uploaded=uploaded, tag=tag, notes=notes)

    def _base(self, base: str | None, platform: Platform, notes: list[str],
              stack: ExitStack) -> BaseImage | None:
        if not base:
            notes.append("no base image configured: the image starts from an empty base and "
                         "needs a Python runtime added before it can run (set image.base)")
            return None
        reference = parse_reference(base)
        client = stack.enter_context(self._client(reference.api_host))
        return load_base(client, reference, platform)

    def _python(self, base: BaseImage | None, notes: list[str]) -> str:
        if self.settings.python_version:
            return self.settings.python_version
        env = (base.config.get("config") or {}).get("Env") or [] if base else []
        for item in env:
            if item.startswith("PYTHON_VERSION="):
                return ".".join(item.split("=", 1)[1].split(".")[:2])
        host = f"{sys.version_info.major}.{sys.version_info.minor}"
        notes.append(f"Python version for dependency wheels: {host} (this machine's); "
                     "set image.python_version if the base image differs")
        return host


def named_repository(target: str | None, model: str, registered: str | None) -> str | None:
    """``target`` with ``{name}`` filled in. It is a deployment name: the pipeline's rule on
    the registered model's name (else the directory's), so a model's name cannot point a build
    at another deployment's repository (``growth.ranker``, ``Other-Team``)."""
    if not target or "{name}" not in target:
        return target
    name = derive_name(registered or Path(model).resolve().name)
    if not name:
        raise UsageError(f"no deployment name can be derived from {model!r} for {{name}}",
                         hint="give the repository in full with --repository")
    return target.replace("{name}", name)


def build_model_image(settings: Settings, model: str | CheckedVersion, repository: str | None,
                      *, models: ModelSource | None, clients: RegistryClients,
                      installer: WheelInstaller,
                      base: str | None = None, labels: Mapping[str, str] | None = None,
                      tag: str | None = None, layout: Path | None = None,
                      progress: BuildProgress | None = None) -> BuiltImage:
    """From an MLflow model URI or directory, or a version the pipeline checked, to a pushed
    image (or an OCI layout).

    ``models`` resolves and downloads MLflow models (None: no MLflow is configured, so only a
    local directory can be built). An image already built from the same inputs is found
    first, before any download.
    """
    source = model_input(model, models)
    lineage = source.lineage
    target = named_repository(repository or settings.image.repository, source.name,
                              lineage.name)
    if not target and layout is None:
        raise UsageError("say where the image goes: --repository REGISTRY/REPO, "
                         "image.repository in promoter.yaml, or --oci-layout DIR")
    target = target or "localhost/promoter-image"
    builder = DaemonlessImageBuilder(settings.image, settings.state_dir, clients, installer,
                                     layout=layout, progress=progress)
    labels = dict(labels or {})
    notes: list[str] = []  # why an image found at the tag was not reused, if one was
    built = builder.find_existing(target, base=base, labels=labels, lineage=lineage, tag=tag,
                                  notes=notes)
    if built is not None:
        return built
    with tempfile.TemporaryDirectory(prefix="promoter-model-") as scratch:
        if source.models is not None:
            builder.progress.status(f"downloading {source.name}")
        return builder.build(source.directory(Path(scratch)), target, base=base, labels=labels,
                             lineage=lineage, tag=tag, notes=notes)
