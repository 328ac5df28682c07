"""Chunked streaming upload to the real registry: exact Content-Ranges, checks, mounts."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from promoter.adapters.oci import RegistryClient, client_for
from promoter.adapters.oci_errors import registry_error
from promoter.errors import PermanentError, TransientError
from promoter.image.layers import TAR, TAR_GZIP, Blob
from promoter.image_settings import ImageSettings

pytestmark = pytest.mark.e2e


def _blob(data: bytes, piece: int, *, lie_about_size: int = 0) -> Blob:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), piece):
            yield data[start:start + piece]
    return Blob("application/octet-stream", "sha256:" + hashlib.sha256(data).hexdigest(),
                len(data) + lie_about_size, chunks)


def test_blob_larger_than_a_chunk_arrives_intact(registry: str) -> None:
    data = os.urandom(300_001)
    blob = _blob(data, 7_777)  # pieces that never line up with the 64 KiB chunks
    with RegistryClient(registry, chunk_size=64 * 1024) as client:
        assert client.push_blob("upload/big", blob) == len(data)
        assert client.bytes_uploaded == len(data)
        assert client.get_blob("upload/big", blob.digest, limit=10**6) == data
        assert client.push_blob("upload/big", blob) == 0  # present: skipped after a HEAD
        assert client.push_blob("upload/other", blob, mount_from="upload/big") == 0  # mounted
        assert client.blob_exists("upload/other", blob.digest)


def test_source_that_changes_length_is_refused(registry: str) -> None:
    data = os.urandom(10_000)
    with RegistryClient(registry, chunk_size=4096) as client:
        with pytest.raises(PermanentError, match="ended early"):
            client.push_blob("upload/changed", _blob(data, 1000, lie_about_size=5))
        with pytest.raises(PermanentError, match="longer than"):
            client.push_blob("upload/changed", _blob(data, 1000, lie_about_size=-5))
        assert not client.blob_exists("upload/changed", _blob(data, 1).digest)


def test_a_blob_of_unknown_digest_is_hashed_while_sent_over_several_chunks(
        registry: str) -> None:
    data = os.urandom(300_001)
    known = _blob(data, 7_777)
    with RegistryClient(registry, chunk_size=64 * 1024) as client:
        digest, sent = client.push_new_blob(
            "upload/new", Blob(known.media_type, "", known.size, known.chunks))
        assert (digest, sent) == (known.digest, len(data))
        assert client.get_blob("upload/new", digest, limit=10**6) == data


@pytest.mark.parametrize(("chunk_mib", "patches"), [(0, 1), (1, 3)])
def test_a_blob_goes_in_one_patch_unless_a_chunk_size_is_set(
        registry: str, chunk_mib: int, patches: int) -> None:
    """One PATCH per blob, as docker and skopeo send it (each boundary costs a round trip);
    ``image.upload_chunk_mib`` cuts it for a proxy that caps request bodies."""
    data = os.urandom(2 * 1024 * 1024 + 12_345)
    known = _blob(data, 256 * 1024)
    sent: list[str] = []
    with client_for(registry, ImageSettings(upload_chunk_mib=chunk_mib)) as client:
        original = client.request

        def counting(method: str, url: str, **kwargs: Any) -> httpx.Response:
            sent.append(method)
            return original(method, url, **kwargs)

        client.request = counting  # type: ignore[method-assign]
        digest, size = client.push_new_blob("upload/patches", Blob(TAR, "", known.size,
                                                                   known.chunks))
        assert (digest, size) == (known.digest, len(data))
        assert client.get_blob("upload/patches", digest, limit=10**7) == data
    assert sent.count("PATCH") == patches


def test_no_hashing_thread_outlives_an_upload_that_succeeded_or_failed(registry: str) -> None:
    data = os.urandom(20_000)
    known = _blob(data, 3_000)
    with RegistryClient(registry, chunk_size=8 * 1024, backoff=0) as client:
        client.push_new_blob("upload/threads", Blob(TAR, "", known.size, known.chunks))
        with pytest.raises(PermanentError, match="ended early"):
            client.push_new_blob("upload/threads", Blob(TAR, "", known.size + 5, known.chunks))
    assert [t for t in threading.enumerate() if t.name == "upload-hash"] == []


def test_a_new_blob_whose_bytes_change_mid_upload_is_not_stored(registry: str) -> None:
    data = bytearray(os.urandom(50_000))

    def chunks() -> Iterator[bytes]:  # the file is rewritten while the upload reads it
        for start in range(0, len(data), 5_000):
            yield bytes(data[start:start + 5_000])
            data[0] ^= 0xFF

    with RegistryClient(registry, chunk_size=16 * 1024) as client:
        digest, _ = client.push_new_blob("upload/moving", Blob(TAR, "", len(data), chunks))
        # What was sent is stored under the digest of what was sent, nothing else.
        stored = client.get_blob("upload/moving", digest, limit=10**6)
        assert "sha256:" + hashlib.sha256(stored).hexdigest() == digest


def test_a_blob_is_read_in_small_pieces_whatever_the_patch_length(registry: str) -> None:
    """Copying a base layer (no mount) streams it from one registry into a PATCH or a file:
    read in PATCH-length pieces, a copy held 128 MiB of it (and a slice of that) at once."""
    from promoter.adapters.oci import STREAM_PIECE_SIZE

    data = os.urandom(3 * STREAM_PIECE_SIZE + 12_345)
    with RegistryClient(registry, chunk_size=64 * STREAM_PIECE_SIZE) as client:
        blob = _blob(data, STREAM_PIECE_SIZE)
        client.push_blob("upload/read", blob)
        pieces = list(client.blob_chunk_source("upload/read", blob.digest)())
        assert b"".join(pieces) == data
        assert max(len(piece) for piece in pieces) <= STREAM_PIECE_SIZE
        copy = Blob(TAR, blob.digest, blob.size,
                    client.blob_chunk_source("upload/read", blob.digest))
        assert client.push_blob("upload/copy", copy) == len(data)
        assert client.get_blob("upload/copy", blob.digest, limit=len(data)) == data


@pytest.fixture(scope="module")
def registry_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A registry of this module's own, and the directory it stores repositories in."""
    from tests.image.registry import running_registry

    workdir = tmp_path_factory.mktemp("sessions-registry")
    with running_registry(workdir) as address:
        yield address, workdir / "data" / "docker" / "registry" / "v2" / "repositories"


def _source(case: str, data: bytes) -> Iterator[bytes]:
    yield data[:1500]
    if case == "unreadable":
        raise OSError("model file vanished")
    yield data[1500:]


# case: (the size the blob claims against the 3000 bytes its source has, the error expected)
_FAILED_UPLOADS = {"ended early": (6000, "ended early"), "grew": (2990, "longer than"),
                   "unreadable": (3000, "vanished")}


@pytest.mark.parametrize("digest_known", [True, False])
@pytest.mark.parametrize("case", sorted(_FAILED_UPLOADS))
def test_a_failed_upload_leaves_no_session_in_the_registry(
        registry_storage: tuple[str, Path], case: str, digest_known: bool) -> None:
    """Each failed attempt left its session, and the bytes sent, in the registry's _uploads
    until the registry's purge (a week by default)."""
    address, repositories = registry_storage
    size, error = _FAILED_UPLOADS[case]
    data = os.urandom(3000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest() if digest_known else ""
    blob = Blob(TAR, digest, size, lambda: _source(case, data))
    repository = f"sessions/{case.replace(' ', '-')}-{digest_known}".lower()
    # An unreadable source is transient: tried again, each attempt's session deleted too.
    with RegistryClient(address, chunk_size=1024, backoff=0) as client, \
            pytest.raises((PermanentError, TransientError), match=error):
        if digest_known:
            client.push_blob(repository, blob)
        else:
            client.push_new_blob(repository, blob)
    uploads = repositories / repository / "_uploads"
    assert uploads.is_dir()  # the upload did reach the registry
    # A DELETE in distribution 2.8 leaves the session's empty hash state behind (a DELETE of
    # a session never written to does too); a session still held has its start and data.
    assert sorted(uploads.glob("*/startedat")) == []
    assert sorted(uploads.glob("*/data")) == []


@pytest.mark.parametrize("digest_known", [True, False])
@pytest.mark.parametrize("hiccup", [httpx.ReadError("connection reset by the source registry"),
                                    OSError("read error")])
def test_a_source_that_fails_to_read_once_is_uploaded_on_the_next_attempt(
        registry: str, digest_known: bool, hiccup: Exception) -> None:
    """A base layer copied from another registry whose connection drops mid-blob: a transient
    failure, tried again (as it was before a failed body was completed with zeros)."""
    data = os.urandom(10_000)
    reads = {"count": 0}

    def chunks() -> Iterator[bytes]:
        reads["count"] += 1
        yield data[:4000]
        if reads["count"] == 1:
            raise hiccup
        yield data[4000:]

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with RegistryClient(registry, chunk_size=8192, backoff=0) as client:
        if digest_known:
            sent = client.push_blob("upload/hiccup", Blob(TAR, digest, len(data), chunks))
        else:
            digest, sent = client.push_new_blob("upload/hiccup-new",
                                                Blob(TAR, "", len(data), chunks))
        assert sent == len(data) and reads["count"] == 2
        repository = "upload/hiccup" if digest_known else "upload/hiccup-new"
        assert client.get_blob(repository, digest, limit=10**6) == data


@pytest.mark.parametrize("digest_known", [True, False])
def test_an_upload_session_the_registry_forgot_is_started_again(
        registry_storage: tuple[str, Path], digest_known: bool) -> None:
    """A session purged mid-upload (it expired, the registry restarted without its uploads):
    the next PATCH is answered 404 BLOB_UPLOAD_UNKNOWN. That is no wrong repository name or
    digest (a UserError nobody retries) but a transient failure: the upload starts over in a
    new session. The registry's own purge is played by deleting the session's directory
    just before the second PATCH."""
    address, repositories = registry_storage
    repository = f"sessions/forgotten-{digest_known}".lower()
    data = os.urandom(3000)
    patches = {"count": 0}

    def purge_before_second_patch(request: httpx.Request) -> None:
        if request.method == "PATCH":
            patches["count"] += 1
            if patches["count"] == 2:
                for session in (repositories / repository / "_uploads").iterdir():
                    shutil.rmtree(session)

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with RegistryClient(address, chunk_size=1024, backoff=0) as client:
        client._http.event_hooks["request"].append(purge_before_second_patch)
        blob = _blob(data, 1024)
        if digest_known:
            sent = client.push_blob(repository, blob)
        else:
            digest, sent = client.push_new_blob(repository,
                                                Blob(blob.media_type, "", blob.size, blob.chunks))
        assert sent == len(data) and patches["count"] == 2 + 3  # two, then all three again
        assert client.get_blob(repository, digest, limit=10**6) == data


def test_a_forgotten_upload_session_is_a_transient_error_saying_so() -> None:
    response = httpx.Response(404, json={"errors": [
        {"code": "BLOB_UPLOAD_UNKNOWN", "message": "blob upload unknown to registry"}]})
    error = registry_error("r.io", response, "uploading blob sha256:abc to m/x")
    assert isinstance(error, TransientError)
    assert "upload session" in error.message and "BLOB_UPLOAD_UNKNOWN" in error.message
    assert "check the repository name" not in f"{error.message} {error.hint}"


def test_a_blob_served_with_a_content_encoding_is_copied_as_stored(registry: str) -> None:
    """Object storage behind a base registry may answer a tar+gzip layer with the object's
    ``Content-Encoding: gzip`` metadata. The blob is those gzip bytes: decoding them gave a
    tar of another digest and size, and the copy failed as if the data had changed."""
    from http.server import BaseHTTPRequestHandler

    from tests.image.serving import serving

    layer = gzip.compress(os.urandom(200_000), mtime=0)
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()

    class Storage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(layer)))
            self.end_headers()
            self.wfile.write(layer)

        def log_message(self, *_: object) -> None:
            pass

    with serving(Storage) as server, \
            RegistryClient(f"127.0.0.1:{server.server_address[1]}") as base, \
            RegistryClient(registry) as client:
        copy = Blob(TAR_GZIP, digest, len(layer), base.blob_chunk_source("base/x", digest))
        assert client.push_blob("upload/encoded", copy) == len(layer)
        assert client.get_blob("upload/encoded", digest, limit=10**6) == layer
