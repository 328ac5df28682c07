"""Build and push a modelcar: model source + registry clients + ``image.modelcar`` + push.

I/O arrives through ports (``RegistryClients``, ``ModelSource``) from the composition root. A
modelcar promoter itself already pushed from the same immutable inputs (its digest recorded
for those inputs, see promoter.image.existing) is found before anything is downloaded;
otherwise the model is downloaded and laid out for the runtime, and its layer is streamed to
the registry once, hashed on the way (the registry checks the digest). The digest is then
recorded under the state dir by the files' metadata, so building the same unchanged files
again reads nothing: it asks the registry (HEAD) and sends 0 bytes. Without that record (a
rebuild elsewhere: the tag already holds an image with a layer of the same size) the layer is
hashed locally first and sent only if the registry lacks it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from promoter.errors import UserError
from promoter.image import modelcar
from promoter.image.base import BaseImage, load_base
from promoter.image.builder import ImageTarget, push
from promoter.image.digest_records import DigestRecords
from promoter.image.existing import PushedImages, find_pushed
from promoter.image.layout import LayoutTarget
from promoter.image.model_input import model_input
from promoter.image.platform import Platform, parse_platform
from promoter.image.reference import Reference, parse_reference
from promoter.image.targets import RegistryTarget
from promoter.image.tarstream import TarEntry, tar_size
from promoter.image_settings import ImageSettings
from promoter.ports.image import (
    BuiltImage,
    CheckedVersion,
    ImageRegistry,
    ModelcarRequest,
    ModelLineage,
    ModelSource,
    RegistryClients,
)


def modelcar_tag(lineage: ModelLineage) -> str:
    return f"modelcar-v{lineage.version}" if lineage.version else "modelcar"


class ModelcarBuilder:
    def __init__(self, settings: ImageSettings, state_dir: Path, clients: RegistryClients, *,
                 layout: Path | None = None) -> None:
        self.settings = settings
        self.layout = layout
        # layer identity (the files' metadata) → the layer's digest: unchanged files are
        # not read again
        self.layer_digests = DigestRecords(state_dir / "image-cache" / "modelcar-layers")
        # Digests recorded while a file was fresh (modelcar.settled): its metadata cannot vouch
        # for its content, so a build re-hashes the files before it trusts one.
        self.unsettled_digests = DigestRecords(
            state_dir / "image-cache" / "modelcar-layers-unsettled")
        self.pushed = PushedImages(state_dir)  # what may be reused: only promoter's own pushes
        self._clients = clients

    def _known_digest(self, identity: str, entries: list[TarEntry]) -> str | None:
        """The layer's digest without sending it: recorded for files whose metadata has not
        changed, or recorded while they were fresh and confirmed by hashing them again."""
        known = self.layer_digests.get(identity)
        if known is not None:
            return known
        unsure = self.unsettled_digests.get(identity)
        if unsure is None or modelcar.layer_digest(entries) != unsure:
            return None
        if modelcar.settled(entries, time.time()):
            self.layer_digests.put(identity, unsure)
        return unsure

    def _target(self, repository: str) -> Reference:
        target = parse_reference(repository)
        if target.tag or target.digest:
            raise UserError(f"modelcar repository {repository!r} must not carry a tag or digest")
        return target

    def _base(self, platform: Platform, notes: list[str],
              stack: ExitStack) -> BaseImage | None:
        if not self.settings.modelcar_base:
            return None
        reference = parse_reference(self.settings.modelcar_base)
        client = stack.enter_context(self._clients(reference.api_host))
        notes.append(f"modelcar base: {reference}")
        return load_base(client, reference, platform)

    def find_existing(self, repository: str, request: ModelcarRequest, lineage: ModelLineage,
                      labels: Mapping[str, str],
                      notes: list[str] | None = None) -> BuiltImage | None:
        """The modelcar promoter already pushed from the same immutable inputs, without
        downloading; None otherwise (said in ``notes`` when one found there is not ours)."""
        if lineage.content_id is None or self.layout is not None:
            return None
        target, platform = self._target(repository), parse_platform(self.settings.platform)
        with ExitStack() as stack:
            base = self._base(platform, [], stack)
        wanted = modelcar.source_inputs(lineage, request, base, labels, platform)
        tag = modelcar_tag(lineage)
        with self._clients(target.api_host) as client:
            return find_pushed(client, target, tag, wanted, self.pushed, rejected=notes)

    def build(self, model_dir: Path, repository: str, request: ModelcarRequest,
              lineage: ModelLineage, labels: Mapping[str, str],
              notes: list[str] | None = None) -> BuiltImage:
        target_ref = self._target(repository)
        platform = parse_platform(self.settings.platform)
        version = lineage.version or "1"
        entries = modelcar.plan(model_dir, version, request)
        notes = [] if notes is None else notes
        listed_at = time.time()
        identity = modelcar.layer_identity(entries)
        with ExitStack() as stack:  # base registry clients stay open: layers stream from them
            base = self._base(platform, notes, stack)
            if base is None and modelcar.layout_for(request) != "triton":
                notes.append("no image.modelcar_base: the modelcar holds only the model files "
                             "(enough for an image volume; KServe's modelcar sidecar runs "
                             "`sh -c 'ln … && sleep infinity'`, which needs a base with a shell)")
            tag = modelcar_tag(lineage)
            target: ImageTarget
            client: ImageRegistry | None = None
            if self.layout is not None:
                target = LayoutTarget(self.layout)
            else:
                client = stack.enter_context(self._clients(target_ref.api_host))
                target = RegistryTarget(client, target_ref)
            uploaded = 0
            digest = self._known_digest(identity, entries)
            if digest is None:
                if client is not None and tar_size(entries) in _layer_sizes_at(
                        client, target_ref.repository, tag):
                    # a rebuild: hashed locally (one read, nothing sent); push() HEADs it
                    digest = modelcar.layer_digest(entries)
                else:  # a first push: one read of the files, hashed while they are sent
                    digest, uploaded = target.push_new_blob(modelcar.layer_blob(entries))
                records = self.layer_digests if modelcar.settled(entries, listed_at) \
                    else self.unsettled_digests
                records.put(identity, digest)
            image = modelcar.assemble(digest, entries, request, lineage, base, labels, platform)
            uploaded += push(image, target, tag)
            if self.layout is None:
                self.pushed.record(modelcar.source_inputs(lineage, request, base, labels,
                                                          platform), image.digest)
        return BuiltImage(reference=f"{target_ref.name}@{image.digest}", digest=image.digest,
                          size=image.size, layers=[x.blob.digest for x in image.layers],
                          bytes_uploaded=uploaded, tag=tag, notes=notes)


def _layer_sizes_at(client: ImageRegistry, repository: str, tag: str) -> set[int]:
    """The layer sizes of the image at ``tag`` (none when there is none or it is not one image
    manifest). Without a layer record (another replica, a CI job without the state dir, a
    wiped cache, a download into a fresh directory) a rebuild of the same files finds its
    layer there: a layer of our size makes hashing first worth its local read, as the blob is
    then likely in the registry already and is not sent again. A first push (a new tag) keeps
    the single read that hashes while uploading. The registry's word only picks the path: the
    digest used is always hashed here from the files."""
    manifest = client.get_manifest(repository, tag)
    if manifest is None:
        return set()
    try:
        layers = json.loads(manifest.body).get("layers")
    except (ValueError, AttributeError):
        return set()
    if not isinstance(layers, list):
        return set()
    return {layer["size"] for layer in layers
            if isinstance(layer, dict) and isinstance(layer.get("size"), int)}


def build_modelcar_image(settings: ImageSettings, state_dir: Path, model: str | CheckedVersion,
                         repository: str, request: ModelcarRequest, *,
                         models: ModelSource | None, clients: RegistryClients,
                         labels: Mapping[str, str] | None = None,
                         layout: Path | None = None) -> BuiltImage:
    """From an MLflow model URI or directory, or a version the pipeline checked, to a pushed
    modelcar (or an OCI layout)."""
    labels = dict(labels or {})
    source = model_input(model, models)
    builder = ModelcarBuilder(settings, state_dir, clients, layout=layout)
    notes: list[str] = []  # why a modelcar found at the tag was not reused, if one was
    built = builder.find_existing(repository, request, source.lineage, labels, notes)
    if built is not None:
        return built
    with tempfile.TemporaryDirectory(prefix="promoter-modelcar-") as scratch:
        return builder.build(source.directory(Path(scratch)), repository, request,
                             source.lineage, labels, notes)
