"""Registry credentials and blobs stay on the registry's origin, whatever its answers say."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from promoter.adapters.oci import RegistryClient
from promoter.adapters.oci_auth import Credentials
from promoter.adapters.oci_origin import upload_location
from promoter.errors import PermanentError
from promoter.image.layers import bytes_blob
from tests.image.origin_standin import BASIC, PASSWORD, USER, Host, registry_and_foreign_host

BLOB = bytes_blob("application/octet-stream", b"model weights")


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    with registry_and_foreign_host() as pair:
        yield pair


def _client(registry: Host) -> RegistryClient:
    return RegistryClient(registry.address, credentials=Credentials(USER, PASSWORD), attempts=1)


def test_a_relative_upload_location_is_followed_on_the_registry(
        hosts: tuple[Host, Host]) -> None:
    registry, foreign = hosts
    registry.upload_location = "/v2/m/x/blobs/uploads/session-1?_state=opened"
    with _client(registry) as client:
        assert client.push_blob("m/x", BLOB) == BLOB.size
    sent = [(seen.method, seen.path.split("?")[0]) for seen in registry.requests
            if seen.authorization == BASIC]
    assert ("PATCH", "/v2/m/x/blobs/uploads/session-1") in sent
    assert ("PUT", "/v2/m/x/blobs/uploads/session-1") in sent
    assert foreign.requests == []


def test_an_upload_location_on_another_origin_is_refused_before_anything_is_sent(
        hosts: tuple[Host, Host]) -> None:
    registry, foreign = hosts
    registry.upload_location = f"{foreign.url}/upload?session=1"
    with _client(registry) as client, pytest.raises(PermanentError) as refused:
        client.push_blob("m/x", BLOB)
    message = str(refused.value)
    assert f"registry {registry.address} sent an upload Location on another origin" in message
    assert f"({foreign.url}," in message
    assert PASSWORD not in message and "session=1" not in message
    assert foreign.requests == []


def test_a_mount_answered_with_a_foreign_session_is_not_deleted_there(
        hosts: tuple[Host, Host]) -> None:
    registry, foreign = hosts
    registry.upload_location = f"{foreign.url}/upload?session=2"
    with _client(registry) as client, pytest.raises(PermanentError, match="another origin"):
        client.push_blob("m/x", BLOB, mount_from="m/base")
    assert foreign.requests == []


def test_credentials_are_attached_only_on_the_registry_origin(
        hosts: tuple[Host, Host]) -> None:
    """Defence in depth below the Location check: once the auth flow holds credentials, a
    request to another origin neither carries them nor answers that origin's challenge."""
    registry, foreign = hosts
    with _client(registry) as client:
        assert not client.blob_exists("m/x", BLOB.digest)  # authenticates, caches Basic
        client.request("PATCH", f"{foreign.url}/upload", content=b"x", expect={401},
                       what="a test")
    assert [seen.authorization for seen in foreign.requests] == [None]


def test_a_storage_redirect_challenge_gets_no_registry_credentials(
        hosts: tuple[Host, Host]) -> None:
    """The registry redirects blob reads to storage on another origin (httpx drops the
    Authorization header there); storage's own Bearer challenge must not be answered by
    sending the registry credentials to the realm it names."""
    registry, foreign = hosts
    with _client(registry) as client:
        assert not client.blob_exists("m/x", BLOB.digest)
        with pytest.raises(Exception, match="HTTP 401"):
            client.get_blob("m/x", BLOB.digest)
    assert foreign.requests and all(seen.authorization is None for seen in foreign.requests)


def _answer_with(location: str, url: str) -> httpx.Response:
    return httpx.Response(202, headers={"Location": location},
                          request=httpx.Request("POST", url))


@pytest.mark.parametrize(("base_url", "location", "expected"), [
    ("https://r.io", "/v2/m/uploads/1?s=a", "https://r.io/v2/m/uploads/1?s=a"),
    ("https://r.io", "https://r.io:443/v2/m/uploads/1", "https://r.io/v2/m/uploads/1"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/v2/m/uploads/1",
     "http://127.0.0.1:5000/v2/m/uploads/1"),
    ("http://[::1]:5000", "uploads/1", "http://[::1]:5000/v2/m/blobs/uploads/1"),
])
def test_same_origin_locations_resolve_against_the_request(
        base_url: str, location: str, expected: str) -> None:
    response = _answer_with(location, f"{base_url}/v2/m/blobs/")
    assert upload_location("r", base_url, response, "uploading") == expected


@pytest.mark.parametrize("location", [
    "http://r.io/v2/m/uploads/1",          # https → http downgrade
    "https://r.io:8443/v2/m/uploads/1",    # another port
    "https://evil.example/v2/m/uploads/1",  # another host
    "//evil.example/v2/m/uploads/1",       # scheme-relative, another host
])
def test_locations_on_another_origin_or_downgraded_are_refused(location: str) -> None:
    response = _answer_with(location, "https://r.io/v2/m/blobs/uploads/")
    with pytest.raises(PermanentError, match=r"registry r\.io sent an upload Location on "
                                             r"another origin \(.*, expected https://r\.io:443\)"):
        upload_location("r.io", "https://r.io", response, "uploading")
