"""OCI distribution client (httpx): the only code that talks to container registries.

Plain HTTP is used for loopback registries (as cosign and crane do) and for registries listed
in ``image.insecure_registries``; everything else is HTTPS. Library and HTTP errors become
promoter errors here: 401 → AuthError, 403/400 → PermanentError, 404 → UserError (or None
where absence is an answer), 429/5xx/connection failures → retried, then TransientError.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ssl
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import certifi
import httpx

from promoter.adapters.oci_auth import Credentials, RegistryAuth
from promoter.adapters.oci_errors import StreamedRequestRefused
from promoter.adapters.oci_limits import MANIFEST_LIMIT, SMALL_LIMIT, body_cap_hook, body_limit
from promoter.adapters.oci_origin import upload_location
from promoter.adapters.oci_upload import upload_blob, upload_hashing
from promoter.errors import (
    PermanentError,
    PromoterError,
    TransientError,
    UnacceptableContent,
)
from promoter.image.reference import is_loopback_registry
from promoter.ports.image import Blob

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
_RETRIED_STATUS = {429, 500, 502, 503, 504}
# A blob is read in pieces of this size, whatever the upload PATCH length: a copy streams
# each piece on into a PATCH or a file, so the piece is all it holds of the blob at a time.
STREAM_PIECE_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str


class RegistryClient:
    """One registry host. ``bytes_uploaded`` counts blob bytes sent (not manifests).

    ``chunk_size`` is the length of each upload PATCH; None (the default) sends the whole blob
    in one, as docker and skopeo do. Bodies are streamed piece by piece, and blobs read in
    ``STREAM_PIECE_SIZE`` pieces, so memory does not grow with it. Each PATCH boundary costs a
    round trip in which nothing is sent, and distribution closes and reopens the upload:
    a 1 GiB layer in 128 MiB PATCHes took about 10 % longer than in one, in 16 MiB ones about
    40 % (measured against distribution 2.8). A chunk size is only worth it in front of a
    proxy that caps request bodies (``image.upload_chunk_mib``). A token that expires during
    a long PATCH does not cut it: the registry checks the token as the request starts.
    """

    def __init__(self, registry: str, *, insecure_registries: Collection[str] = (),
                 credentials: Credentials | None = None, timeout: float = 60.0,
                 chunk_size: int | None = None, attempts: int = 4,
                 backoff: float = 0.5) -> None:
        plain = is_loopback_registry(registry) or registry in insecure_registries
        self.registry = registry
        self.base_url = f"{'http' if plain else 'https'}://{registry}"
        self.chunk_size = chunk_size
        self.attempts = attempts
        self.backoff = backoff
        self.bytes_uploaded = 0
        auth = RegistryAuth(registry, credentials, self.base_url)
        self._http = httpx.Client(base_url=self.base_url, auth=auth,
                                  timeout=httpx.Timeout(timeout, connect=10.0),
                                  follow_redirects=True, verify=_tls_context(),
                                  # Uncompressed answers, so the body caps count real bytes.
                                  headers={"Accept-Encoding": "identity"},
                                  event_hooks={"response": [body_cap_hook(
                                      f"registry {registry}")]})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- low level -------------------------------------------------------------------------
    def request(self, method: str, url: str, *, expect: Collection[int], what: str,
                retry: bool = True, limit: int | None = SMALL_LIMIT, limited: str = "",
                **kwargs: Any) -> httpx.Response:
        """Send with retries on transient failures; map unexpected statuses to errors.
        A successful answer larger than ``limit`` bytes (``limited`` names it) is refused."""
        attempts = self.attempts if retry else 1
        extensions = body_limit(limit, limited or f"the answer while {what}")
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, url, extensions=extensions, **kwargs)
            except httpx.StreamError:
                # A streamed body cannot be re-sent (e.g. the token expired mid-upload and
                # was renewed): the caller resumes or restarts the upload.
                raise StreamedRequestRefused(f"registry {self.registry} asked to repeat a "
                                             f"streamed request while {what}") from None
            except httpx.TransportError as exc:
                if attempt == attempts:
                    raise TransientError(f"registry {self.registry} unreachable while {what}: "
                                         f"{type(exc).__name__}: {exc}",
                                         hint=f"check that {self.base_url} is up and reachable"
                                         ) from None
                self._sleep(attempt, None)
                continue
            if response.status_code in expect:
                return response
            if response.status_code in _RETRIED_STATUS and attempt < attempts:
                self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            raise self.error_for(response, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2 ** (attempt - 1)
        if retry_after and retry_after.isdigit():
            delay = min(float(retry_after), 30.0)
        time.sleep(delay)

    def error_for(self, response: httpx.Response, what: str) -> Exception:
        from promoter.adapters.oci_errors import registry_error

        return registry_error(self.registry, response, what)

    # -- blobs -----------------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", expect={200, 404},
                                what=f"checking blob {digest[:19]} in {repository}")
        return response.status_code == 200

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; False when the registry wants an upload instead."""
        what = f"mounting {digest[:19]} from {from_repository}"
        # 401/403 here, after the auth flow's token retry, is the source repository refusing
        # pull access (distribution asks for it in the mount's token scope; GitLab's token
        # service leaves it out for a repository the user cannot read), not bad credentials:
        # a mount only saves the upload, so the caller uploads. Nothing of the answer is
        # kept; credentials that are wrong fail that upload with their own error.
        response = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/",
            params={"mount": digest, "from": from_repository},
            expect={201, 202, 401, 403}, what=what)
        if response.status_code == 202 and response.headers.get("Location"):
            # An upload session was opened instead: drop it (on the registry's origin only).
            self.discard_upload(upload_location(self.registry, self.base_url, response, what))
        return response.status_code == 201

    def discard_upload(self, location: str) -> None:
        """End an upload session promoter will not finish, so its bytes do not wait in the
        registry's uploads until a purge. Best effort: a failure here is not what the caller
        reports (the registry purges abandoned sessions in the end)."""
        with contextlib.suppress(httpx.HTTPError, PromoterError):
            self._http.request("DELETE", location)

    def push_blob(self, repository: str, blob: Blob, *, mount_from: str | None = None) -> int:
        """Make ``blob`` present in ``repository``; returns the bytes actually uploaded."""
        if self.blob_exists(repository, blob.digest):
            return 0
        if mount_from and mount_from != repository and self.mount_blob(
                repository, blob.digest, mount_from):
            return 0
        if blob.chunks is None:
            raise PermanentError(f"blob {blob.digest} is missing from {repository} and promoter "
                                 "does not hold its bytes", hint="push the base image first")
        sent = upload_blob(self, repository, blob)
        self.bytes_uploaded += sent
        return sent

    def push_new_blob(self, repository: str, blob: Blob) -> tuple[str, int]:
        """Upload a blob whose digest is not known yet (computed while sending, one read);
        returns (digest, bytes sent)."""
        digest, sent = upload_hashing(self, repository, blob)
        self.bytes_uploaded += sent
        return digest, sent

    def get_blob(self, repository: str, digest: str, *, limit: int = 16 * 1024 * 1024) -> bytes:
        """A small blob (config, signature payload), checked against its digest."""
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", expect={200},
                                what=f"reading blob {digest[:19]} from {repository}",
                                limit=limit, limited=f"blob {digest[:19]} of {repository}")
        data = response.content
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise UnacceptableContent(f"registry {self.registry} returned a blob for {digest} "
                                      "whose content does not match that digest")
        return data

    @contextmanager
    def stream_blob(self, repository: str, digest: str) -> Iterator[Iterator[bytes]]:
        with self._http.stream("GET", f"/v2/{repository}/blobs/{digest}",
                               extensions=body_limit(None, "a blob")) as response:
            if response.status_code != 200:
                response.read()
                raise self.error_for(response, f"reading blob {digest[:19]} from {repository}")
            # The raw bytes: a blob is what its digest names. Object storage behind a
            # registry may label a tar+gzip layer ``Content-Encoding: gzip``, and decoding it
            # would hand on a tar of another digest and size (the size cap, when one is set,
            # counts these same raw bytes).
            yield response.iter_raw(STREAM_PIECE_SIZE)

    def blob_chunk_source(self, repository: str, digest: str) -> Callable[[], Iterator[bytes]]:
        """A re-openable chunk source reading a blob from this registry (for copies)."""
        def chunks() -> Iterator[bytes]:
            with self.stream_blob(repository, digest) as stream:
                yield from stream
        return chunks

    # -- manifests -------------------------------------------------------------------------
    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        response = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                                headers={"Accept": ", ".join(MANIFEST_TYPES)},
                                expect={200, 404}, what=f"reading manifest {repository}:"
                                                        f"{reference}",
                                limit=MANIFEST_LIMIT,
                                limited=f"manifest {repository}:{reference}")
        if response.status_code == 404:
            return None
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise UnacceptableContent(f"registry {self.registry} returned a manifest that "
                                      f"does not match the digest {reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Manifest(body, media_type, digest)

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        response = self.request("HEAD", f"/v2/{repository}/manifests/{reference}",
                                headers={"Accept": ", ".join(MANIFEST_TYPES)},
                                expect={200, 404}, what=f"checking {repository}:{reference}")
        if response.status_code == 404:
            return None
        digest: str | None = response.headers.get("Docker-Content-Digest")
        return digest

    def put_manifest(self, repository: str, reference: str, body: bytes,
                     media_type: str) -> tuple[str, bool]:
        """Push a manifest or index; returns (digest, registry-handled-subject)."""
        response = self.request("PUT", f"/v2/{repository}/manifests/{reference}", content=body,
                                headers={"Content-Type": media_type}, expect={201},
                                what=f"pushing manifest {repository}:{reference}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        returned = response.headers.get("Docker-Content-Digest")
        if returned and returned != digest:
            raise PermanentError(f"registry {self.registry} stored manifest {repository}:"
                                 f"{reference} as {returned}, expected {digest}")
        return digest, "OCI-Subject" in response.headers

    def referrers(self, repository: str, digest: str) -> dict[str, Any] | None:
        """The referrers API index, or None when the registry has no such API."""
        response = self.request("GET", f"/v2/{repository}/referrers/{digest}",
                                headers={"Accept": OCI_INDEX}, expect={200, 404, 405},
                                what=f"listing referrers of {digest[:19]}",
                                limit=MANIFEST_LIMIT,
                                limited=f"the referrers index of {digest[:19]}")
        if response.status_code != 200 or not response.headers.get(
                "Content-Type", "").startswith(OCI_INDEX):
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


class _ClientSettings(Protocol):
    insecure_registries: list[str]
    auth_file: Path | None
    upload_chunk_mib: int


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the whole CA bundle, which
    cost a warm promotion ~20 % of its time when every registry client made its own."""
    return ssl.create_default_context(cafile=certifi.where())


def client_for(registry: str, settings: _ClientSettings) -> RegistryClient:
    """A client for ``registry`` with credentials from the auth file, if it names one."""
    from promoter.adapters.oci_auth import credentials_from_auth_file

    chunk = settings.upload_chunk_mib * 1024 * 1024 or None
    return RegistryClient(registry, insecure_registries=settings.insecure_registries,
                          credentials=credentials_from_auth_file(registry, settings.auth_file),
                          chunk_size=chunk)
