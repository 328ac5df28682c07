"""Every image a list of rendered Kubernetes objects would make a cluster pull. Pure.

The CI gate judges what the cluster would run, so it reads the built overlays, not the
kustomizations: a kustomization's ``images:`` entry says nothing about an image written into a
manifest or a patch, and a modelcar lives in ``storageUri(s)`` or an image volume, not in
``images:``. The walk is generic rather than a list of workload kinds, so a kind nobody listed
(a ReplicaSet, an operator's CRD embedding a pod spec) is still seen; it fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OCI_SCHEME = "oci://"
# REPOSITORY@sha256:<64 hex>, the one rule for "pinned by digest" (the gate, render's --image
# and --modelcar, runtime_images); a tag before the digest stays in the repository part, and
# tags may hold capitals (distribution's tag grammar: [A-Za-z0-9_][A-Za-z0-9._-]*).
_PINNED = re.compile(r"(?P<repo>[a-z0-9][a-z0-9._:/-]*(?::[A-Za-z0-9_][A-Za-z0-9._-]*)?)"
                     r"@(?P<digest>sha256:[0-9a-f]{64})")
# KServe's own pod annotations for what its storage initializer loads: its pod webhook reads
# the source URI from the pod's annotation (an oci:// one injects that modelcar, any other is
# downloaded), on any pod labelled serving.kserve.io/inferenceservice, a Deployment's too,
# and copies an InferenceService's annotations onto its pods. The storage-spec ones name a
# bucket through KServe's storage-config Secret.
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
STORAGE_SPEC_ANNOTATIONS = "internal.serving.kserve.io/storage-spec"   # -key, -param… too
# KServe's StorageSpec (predictor.model.storage and the framework fields): files from the
# bucket its key names in the storage-config Secret, in place of a storageUri.
_STORAGE_SPEC_FIELDS = frozenset({"path", "key", "parameters", "schemaPath"})
# Objects whose fields are data, not something the cluster runs: a ConfigMap value under a key
# named "image" is text for someone else to read.
_DATA_KINDS = frozenset({"ConfigMap", "Secret"})


@dataclass(frozen=True)
class ImageUse:
    """One place a rendered object names an image: ``Deployment/x`` at
    ``spec.template.spec.containers[0].image`` pulls ``reference``."""

    obj: str
    field: str
    reference: str
    # False for a storage URI of another scheme (s3://, gs://, https://, pvc://, hf://…): KServe
    # downloads those files itself, so no image, digest or signature stands for them.
    from_registry: bool = True

    @property
    def pinned(self) -> bool:
        return self.from_registry and is_pinned(self.reference)


def split_pinned(reference: str) -> tuple[str, str] | None:
    """(repository, digest) of ``REPOSITORY@sha256:<64 hex>``, the whole string; else None."""
    match = _PINNED.fullmatch(reference)
    return (match["repo"], match["digest"]) if match else None


def is_pinned(reference: str) -> bool:
    """True for ``REPOSITORY@sha256:<64 hex>`` (a tag before the digest is allowed: the digest
    decides what is pulled)."""
    return split_pinned(reference) is not None


def image_uses(documents: Sequence[Mapping[str, Any]]) -> list[ImageUse]:
    """Every image the objects name, in document order: any ``image`` string (containers,
    initContainers, ephemeralContainers of any pod template, KServe predictor/transformer
    containers and framework specs, ServingRuntime containers), image volumes'
    ``image.reference``, and KServe's storage URIs, in ``storageUri``, each
    ``storageUris[].uri`` or the source-URI annotation (any object's, its own metadata's
    too): an ``oci://`` one (a modelcar) as the image, ``oci://`` stripped, any other as it
    is, not ``from_registry`` (model files nothing signed), as are a StorageSpec and the
    storage-spec annotations."""
    uses: list[ImageUse] = []
    for document in documents:
        if not isinstance(document, Mapping) or document.get("kind") in _DATA_KINDS:
            continue
        name = (document.get("metadata") or {}).get("name", "?")
        obj = f"{document.get('kind', '?')}/{name}"
        for key, value in document.items():
            # The object's own metadata only through its annotations (KServe copies an
            # InferenceService's onto its pods): a name or label is no image.
            if key == "metadata":
                annotations = value.get("annotations") if isinstance(value, Mapping) else None
                found = _annotations(annotations, "metadata.annotations")
            else:
                found = _walk(value, key)
            uses.extend(ImageUse(obj, field, reference, from_registry)
                        for field, reference, from_registry in found)
    return uses


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, bool]]:
    if isinstance(value, Mapping):
        for key, child in value.items():
            here = f"{path}.{key}"
            if key == "image" and isinstance(child, str):
                yield here, child, True
            elif key == "image" and isinstance(child, Mapping) and "reference" in child:
                # A Kubernetes image volume: volumes[].image.reference (pullPolicy beside it).
                yield f"{here}.reference", str(child["reference"]), True
            elif key == "storageUri" and isinstance(child, str):
                yield _storage(here, child)
            elif key == "storageUris" and isinstance(child, list):
                # KServe's list form (each {uri, mountPath}): a modelcar may hide in any entry,
                # and any entry may name files from elsewhere.
                yield from _storage_uris(child, here)
            elif key == "storage" and isinstance(child, Mapping) \
                    and _STORAGE_SPEC_FIELDS & set(child):
                yield here, _storage_spec(child), False
            elif key == "annotations" and isinstance(child, Mapping):
                yield from _annotations(child, here)
            else:
                yield from _walk(child, here)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk(child, f"{path}[{index}]")


def _annotations(annotations: Any, path: str) -> Iterator[tuple[str, str, bool]]:
    if not isinstance(annotations, Mapping):
        return
    for key, value in annotations.items():
        here = f"{path}[{key}]"
        if key == SOURCE_URI_ANNOTATION:
            yield _storage(here, str(value))
        elif isinstance(key, str) and key.startswith(STORAGE_SPEC_ANNOTATIONS):
            yield here, str(value), False


def _storage_spec(spec: Mapping[str, Any]) -> str:
    """A StorageSpec as the gate quotes it: which storage key and path it loads."""
    return f"storage key {spec.get('key') or '(the default)'}, path {spec.get('path') or ''}"


def _storage_uris(entries: list[Any], path: str) -> Iterator[tuple[str, str, bool]]:
    for index, entry in enumerate(entries):
        uri = entry.get("uri") if isinstance(entry, Mapping) else None
        if isinstance(uri, str):
            yield _storage(f"{path}[{index}].uri", uri)


def _storage(field: str, uri: str) -> tuple[str, str, bool]:
    if uri.startswith(OCI_SCHEME):
        return field, uri[len(OCI_SCHEME):], True
    return field, uri, False


def unpinned_problem(overlay: str, use: ImageUse) -> str:
    """Why the gate refuses ``use``, naming where it is and what to do."""
    return (f"{overlay}: {use.obj} {use.field}: {use.reference!r} is not pinned by digest "
            "(REPOSITORY@sha256:<64 hex>); a tag can be moved after review, so pin what was "
            "signed (promoter renders its artifacts pinned; set runtime_images.<runtime> for a "
            "server image)")


def unsigned_storage_problem(overlay: str, use: ImageUse) -> str:
    """Why the gate refuses a storage URI outside any registry: the cluster would load model
    files that no signature covers, whatever was signed."""
    return (f"{overlay}: {use.obj} {use.field}: {use.reference[:200]!r} loads model files "
            "from outside any registry, which no signature covers; only a modelcar pinned by "
            "digest (oci://REPOSITORY@sha256:<64 hex>) passes, as promoter renders it")
