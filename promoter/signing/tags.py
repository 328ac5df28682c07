"""Adding our entry to a tag that other signers rewrite too, without losing theirs or ours.

Two tags list every signature of a digest: the legacy ``sha256-<hex>.sig`` manifest (one layer
per signature) and, on registries without the referrers API, the referrers tag schema index
``sha256-<hex>`` (one descriptor per referrer). Each writer reads the tag, adds its entry and
PUTs the whole list back. Registries offer no conditional PUT (no If-Match), so when two
writers read before either writes, the later PUT silently drops the earlier writer's entry:
promoter's key signing, CI's keyless job, a second replica or an operator's cosign can all
sign one digest at the same moment.

``add_to_tag`` repairs that lost update from the side that lost: after writing, it waits for
writers that read the tag before our PUT to land theirs (a short, jittered settle delay), reads
the tag again and, when our entry is gone, merges it into what is there now and writes again.
It always merges into the current content, so entries others wrote are never dropped, and it
never writes when our entry is already listed.

What remains: without conditional writes this narrows the window, it does not close it. A
writer whose read-to-PUT takes longer than our settle delay can still drop our entry after we
looked. The pipeline verifies its own signature right after signing and before it opens a merge
request (promoter/core/artifact_steps.py ``verify``), so a signature lost before that check
denies the promotion instead of proposing an unsigned image; one lost after it is not seen.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from promoter.errors import TransientError
from promoter.image.layers import Blob
from promoter.signing.registry import SignatureRegistry

# A concurrent writer's read → (config push) → PUT is a few registry round trips; the delay is
# paid once per tag written (never when our entry is already listed), so it stays short.
SETTLE_SECONDS = (0.1, 0.4)
ATTEMPTS = 5


@dataclass(frozen=True)
class TagContent:
    """What to PUT under the tag: its body, and blobs the body names that must exist first."""

    body: bytes
    media_type: str
    blobs: Sequence[Blob] = ()


# The current tag body (None when the tag does not exist) → the content with our entry added,
# or None when our entry is already listed. Must be pure: it runs again on every re-read.
Merge = Callable[[bytes | None], TagContent | None]
Pause = Callable[[], None]


def jittered_settle() -> None:
    """The production settle delay. Jittered so two signers that lost to each other do not
    re-read and rewrite in lockstep, dropping each other again on every attempt."""
    time.sleep(random.uniform(*SETTLE_SECONDS))  # noqa: S311 -- timing jitter, not a secret


def add_to_tag(client: SignatureRegistry, repository: str, tag: str, merge: Merge, *,
               settle_delay: Pause = jittered_settle, attempts: int = ATTEMPTS) -> bool:
    """Make ``tag`` list our entry (``merge`` adds it); True when we wrote the tag.

    Raises TransientError after ``attempts`` writes that another writer replaced each time: the
    job is retried later rather than reported signed without its signature listed."""
    writes = 0
    while True:
        current = client.get_manifest(repository, tag)
        content = merge(current.body if current else None)
        if content is None:
            return writes > 0
        if writes == attempts:
            raise TransientError(
                f"the signature list {repository}:{tag} lost our entry after each of {attempts} "
                "writes: other signers are rewriting it at the same time",
                hint="retry; if it keeps happening, look for a process rewriting that tag "
                     "in a loop")
        for blob in content.blobs:
            client.push_blob(repository, blob)
        client.put_manifest(repository, tag, content.body, content.media_type)
        writes += 1
        settle_delay()
