"""An image promoter itself already pushed from the same inputs, so a rebuild of a registered
version downloads nothing. Shared by the serving image and the modelcar builds.

The config label ``SOURCE_INPUTS_LABEL`` is only a cache hint, never an authentication: it is a
hash of public facts (promoter's version, the model's source, name, version and run id, the
base digest, platform, labels), so anyone allowed to push to the repository (on GitLab every
Developer and every CI job, far more people than hold the signing key) can compute it and push
an image of their own at ``v<N>`` carrying it. Adopting that image would have promoter sign
and pin someone else's bytes. So an image at the tag is reused only when its manifest digest
(hashed here from the bytes read, not taken from the registry's word) is the digest promoter
recorded when it pushed a build of exactly those inputs (``PushedImages``).

Where the record lives: a small file per source inputs under ``<state_dir>/image-cache/pushed``,
beside the builds' other caches, written atomically, in the owner-only state directory that
only promoter writes. Not the state database: the record is a pure cache, and a miss (another
replica, a wiped cache, a first run after upgrading) costs only a rebuild, which is
reproducible (same inputs, same digest), so blobs the registry already holds are not sent
again (the serving image's layers are hashed before they are pushed; a modelcar's layer is
hashed locally first when the tag holds an image with a layer of its size); a table would
add a schema migration on both backends for no gain in correctness.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from promoter.image.builder import SOURCE_INPUTS_LABEL
from promoter.image.config import OCI_MANIFEST
from promoter.image.digest_records import DigestRecords
from promoter.image.reference import Reference, check_digest
from promoter.ports.image import BuiltImage, ImageRegistry, StoredManifest

FOUND_NOTE = "already built from the same inputs: nothing downloaded or pushed"
_log = logging.getLogger("promoter.image")


class PushedImages:
    """source inputs → the manifest digest promoter pushed for them (the last one)."""

    def __init__(self, state_dir: Path) -> None:
        self._records = DigestRecords(state_dir / "image-cache" / "pushed")

    def record(self, inputs: str | None, digest: str) -> None:
        """Remember that promoter pushed ``digest`` for ``inputs`` (None: a mutable source,
        which is never looked up)."""
        if inputs is not None:
            self._records.put(inputs, digest)

    def digest(self, inputs: str) -> str | None:
        return self._records.get(inputs)


def find_pushed(client: ImageRegistry, target: Reference, tag: str, wanted: str | None,
                pushed: PushedImages, *, context: list[str] | None = None,
                rejected: list[str] | None = None) -> BuiltImage | None:
    """The image at ``target:tag`` if promoter pushed it for exactly ``wanted`` (its notes:
    ``context`` and that it was found); else None, saying why in ``rejected`` when an image
    there claims those inputs but is not one promoter pushed."""
    if wanted is None:
        return None
    manifest = client.get_manifest(target.repository, tag)
    if manifest is None or manifest.media_type != OCI_MANIFEST:
        return None
    digest = "sha256:" + hashlib.sha256(manifest.body).hexdigest()
    if digest != pushed.digest(wanted):
        if _claims(client, target, tag, manifest, wanted):
            _not_adopted(f"{target.name}:{tag}", digest, rejected)
        return None
    body = json.loads(manifest.body)
    layers = body.get("layers", [])
    size = (len(manifest.body) + int(body["config"]["size"])
            + sum(int(layer["size"]) for layer in layers))
    return BuiltImage(reference=f"{target.name}@{digest}", digest=digest,
                      size=size, layers=[check_digest(layer["digest"],
                                                      f"a layer of image {target.name}:{tag}")
                                         for layer in layers],
                      bytes_uploaded=0, tag=tag, notes=[*(context or []), FOUND_NOTE])


def _claims(client: ImageRegistry, target: Reference, tag: str, manifest: StoredManifest,
            wanted: str) -> bool:
    """Whether the image's config carries ``wanted`` as its source inputs (only to explain)."""
    config = client.get_blob(target.repository, check_digest(
        json.loads(manifest.body)["config"]["digest"],
        f"the config of image {target.name}:{tag}"))
    labels = (json.loads(config).get("config") or {}).get("Labels") or {}
    return bool(labels.get(SOURCE_INPUTS_LABEL) == wanted)


def _not_adopted(where: str, digest: str, notes: list[str] | None) -> None:
    note = (f"an image at {where} ({digest}) carries the expected source inputs but promoter "
            "has no record of pushing it: rebuilding (the label is a hint anyone with push "
            "access can write; a genuine earlier build comes out with the same digest)")
    if notes is not None:
        notes.append(note)
    _log.warning("%s", note)
