"""Token auth (the Bearer flow of GitLab's container registry) against the real registry."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from promoter.adapters.oci import RegistryClient
from promoter.adapters.oci_auth import (
    Credentials,
    RegistryAuth,
    credentials_from_auth_file,
    scope_key,
    token_lifetime,
)
from promoter.errors import AuthError, ConfigError
from promoter.image.layers import Blob, bytes_blob
from tests.image.registry import running_registry
from tests.image.throttle import throttled
from tests.image.token_server import TokenIssuer, token_auth_config, token_service

pytestmark = pytest.mark.e2e
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenIssuer]]:
    workdir = tmp_path_factory.mktemp("token-registry")
    issuer = TokenIssuer({"ci": "s3cret"})
    (workdir / "token-ca.pem").write_bytes(issuer.cert_pem())
    with token_service(issuer) as realm, running_registry(
            workdir / "registry", token_auth_config(realm, workdir / "token-ca.pem")) as address:
        yield address, issuer


def _auth_file(path: Path, registry: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return path


def test_build_pushes_through_the_bearer_token_flow(
        token_registry: tuple[str, TokenIssuer], promoter: Run, model_dir: Path,
        tmp_path: Path) -> None:
    registry, issuer = token_registry
    config = tmp_path / "promoter.yaml"
    auth_file = _auth_file(tmp_path / "auth.json", registry, "ci", "s3cret")
    config.write_text(f"image:\n  auth_file: {auth_file}\n")
    code, out, err = promoter("--config", str(config), "image", "build", str(model_dir),
                              "--repository", f"{registry}/ml/iris", "--output", "json")
    assert code == 0, err
    assert issuer.requests >= 1
    digest = json.loads(out)["digest"]
    credentials = credentials_from_auth_file(registry, tmp_path / "auth.json")
    with RegistryClient(registry, credentials=credentials) as client:
        assert client.manifest_digest("ml/iris", digest) == digest


def test_bad_or_missing_credentials_are_auth_errors(
        token_registry: tuple[str, TokenIssuer]) -> None:
    registry, _ = token_registry
    blob = bytes_blob("application/octet-stream", b"x")
    with RegistryClient(registry, credentials=Credentials("ci", "wrong")) as client, \
            pytest.raises(AuthError, match="refused the credentials of user 'ci'") as refused:
        client.push_blob("ml/iris", blob)
    assert "wrong" not in str(refused.value)
    with RegistryClient(registry) as client, pytest.raises(AuthError, match="requires credent"):
        client.blob_exists("ml/iris", blob.digest)


def test_auth_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        credentials_from_auth_file("r.io", tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        credentials_from_auth_file("r.io", tmp_path / "bad.json")
    assert credentials_from_auth_file("other.io", _auth_file(tmp_path / "a.json", "r.io", "u",
                                                             "p")) is None
    assert repr(Credentials("u", "p")) == "Credentials(username='u', password='********')"


@pytest.mark.parametrize("stored_as", ["https://index.docker.io/v1/", "docker.io"])
def test_docker_hub_credentials_are_found_under_the_names_logins_store(
        tmp_path: Path, stored_as: str) -> None:
    """`docker login` stores Docker Hub as https://index.docker.io/v1/, `skopeo login` as
    docker.io; promoter talks to registry-1.docker.io."""
    auth = _auth_file(tmp_path / "auth.json", stored_as, "hub-user", "hub-pass")
    assert credentials_from_auth_file("registry-1.docker.io", auth) == \
        Credentials("hub-user", "hub-pass")
    assert credentials_from_auth_file("quay.io", auth) is None


def test_an_empty_docker_hub_entry_does_not_hide_one_with_credentials(tmp_path: Path) -> None:
    """A credential helper leaves "https://index.docker.io/v1/": {} beside skopeo's entry."""
    auth = base64.b64encode(b"hub-user:hub-pass").decode()
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {},
                                          "docker.io": {"auth": auth}}}))
    assert credentials_from_auth_file("registry-1.docker.io", path) == \
        Credentials("hub-user", "hub-pass")


def test_one_token_cache_key_for_the_same_rights_in_any_order() -> None:
    """distribution's challenges say push,pull on one request and pull,push on the next."""
    assert scope_key("repository:ml/r:push,pull") == scope_key("repository:ml/r:pull,push")
    assert scope_key("repository:b:pull repository:a:push,pull") == \
        "repository:a:pull,push repository:b:pull"
    assert scope_key("") == ""


@pytest.fixture
def short_tokens(token_registry: tuple[str, TokenIssuer]) -> Iterator[TokenIssuer]:
    """The token service of ``token_registry``, its settings restored after the test."""
    _, issuer = token_registry
    yield issuer
    issuer.lifetime, issuer.expires_in = 300, None


TOKEN_SECONDS = 4  # short-lived tokens: each upload below outlives two or more


def _blob(data: bytes, piece: int = 5_000) -> Blob:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), piece):
            yield data[start:start + piece]
    return Blob("application/octet-stream", "sha256:" + hashlib.sha256(data).hexdigest(),
                len(data), chunks)


def test_an_upload_outliving_its_token_renews_the_token_before_it_expires(
        token_registry: tuple[str, TokenIssuer], short_tokens: TokenIssuer) -> None:
    registry, _ = token_registry
    # GitLab's are 300 s; uploads take longer. 4 s, not less: a token must outlive its way
    # through a loaded machine (the test failed under a parallel full suite with 2 s).
    short_tokens.lifetime = short_tokens.expires_in = TOKEN_SECONDS
    data = os.urandom(400_000)
    blob = _blob(data)
    before = short_tokens.requests
    # Twenty PATCHes over ten seconds: two to three token lifetimes.
    with throttled(registry, 40_000) as slow, RegistryClient(
            slow, credentials=Credentials("ci", "s3cret"), chunk_size=20_000, attempts=2,
            backoff=0) as client:
        assert client.push_blob("ml/expiring", blob) == len(data)
        assert client.bytes_uploaded == len(data)  # in one go: no restart re-sent anything
        short_tokens.lifetime = short_tokens.expires_in = 300
        assert client.get_blob("ml/expiring", blob.digest, limit=10**6) == data
    assert short_tokens.requests - before >= 3  # renewed along the way


def test_a_token_that_dies_early_is_renewed_and_the_upload_resumes_where_it_stood(
        token_registry: tuple[str, TokenIssuer], short_tokens: TokenIssuer) -> None:
    """The service promises 300 s but the registry stops accepting the token after 4 s (a
    revoked token, a service clock ahead): the PATCH gets 401, its streamed body cannot be
    sent again, so the upload continues from what the registry holds instead of from 0."""
    registry, _ = token_registry
    short_tokens.lifetime, short_tokens.expires_in = TOKEN_SECONDS, 300
    known, new = os.urandom(400_000), os.urandom(400_000)
    with throttled(registry, 40_000) as slow, RegistryClient(
            slow, credentials=Credentials("ci", "s3cret"), chunk_size=20_000, attempts=2,
            backoff=0) as client:
        assert client.push_blob("ml/revoked", _blob(known)) == len(known)
        unknown = _blob(new)
        digest, sent = client.push_new_blob(
            "ml/revoked", Blob(unknown.media_type, "", unknown.size, unknown.chunks))
        assert (digest, sent) == (unknown.digest, len(new))  # the hash took nothing twice
        assert client.bytes_uploaded == len(known) + len(new)
        short_tokens.lifetime = 300
        assert client.get_blob("ml/revoked", digest, limit=10**6) == new
        assert client.get_blob("ml/revoked", "sha256:" + hashlib.sha256(known).hexdigest(),
                               limit=10**6) == known


def test_a_token_lives_as_long_as_its_answer_says_counted_from_its_issue() -> None:
    issued = "2026-12-01T12:00:00Z"
    noon = 1_796_126_400.0  # 2026-12-01T12:00:00Z
    assert token_lifetime({"token": "t"}, noon) == 60  # the spec's default
    assert token_lifetime({"token": "t", "expires_in": 300}, noon + 1000) == 300
    assert token_lifetime({"token": "t", "expires_in": 300, "issued_at": issued},
                          noon + 100) == 200  # handed out from a cache, partly used up
    assert token_lifetime({"token": "t", "expires_in": 300, "issued_at": issued},
                          noon + 900) == 0  # already over: renewed before the next request
    assert token_lifetime({"token": "t", "expires_in": 300, "issued_at": "yesterday"},
                          noon) == 300


def _challenged(auth: RegistryAuth, registry_url: str, realm: str) -> httpx.Request:
    """Drive the auth flow through one Bearer challenge; the request it sends next."""
    flow = auth.auth_flow(httpx.Request("GET", f"{registry_url}/v2/m/manifests/v1"))
    request = next(flow)
    challenge = httpx.Response(401, request=request, headers={
        "WWW-Authenticate": f'Bearer realm="{realm}",service="r",scope="repository:m:pull"'})
    return flow.send(challenge)


def test_credentials_never_go_to_a_plain_http_token_realm_of_an_https_registry() -> None:
    """A registry over HTTPS whose challenge names an http:// realm would have promoter send
    the Basic credentials there in clear; only a registry that is itself plain HTTP
    (loopback, image.insecure_registries) may have a plain-HTTP token service."""
    secret = Credentials("ci", "s3cret-pw")
    https = RegistryAuth("registry.example.com", secret, "https://registry.example.com")
    with pytest.raises(AuthError, match=r"not HTTPS \(http://auth\.example\.com\)") as refused:
        _challenged(https, "https://registry.example.com", "http://auth.example.com/token")
    assert "s3cret" not in f"{refused.value.message} {refused.value.hint}"
    # An HTTPS realm gets them, as does a plain-HTTP realm of a plain-HTTP registry.
    to_https = _challenged(https, "https://registry.example.com",
                           "https://auth.example.com/token")
    assert to_https.headers["Authorization"] == secret.basic_header()
    plain = RegistryAuth("127.0.0.1:5000", secret, "http://127.0.0.1:5000")
    to_plain = _challenged(plain, "http://127.0.0.1:5000", "http://127.0.0.1:5001/token")
    assert (to_plain.url.scheme, to_plain.headers["Authorization"]) == \
        ("http", secret.basic_header())


def test_an_anonymous_token_request_may_go_to_a_plain_http_realm() -> None:
    """Without credentials nothing secret is sent: a public base behind a TLS-ending proxy whose
    challenge names an http:// realm still pulls (the pulled bytes are checked by digest)."""
    anonymous = RegistryAuth("registry.example.com", None, "https://registry.example.com")
    request = _challenged(anonymous, "https://registry.example.com",
                          "http://registry.example.com/service/token")
    assert (request.url.scheme, request.url.path) == ("http", "/service/token")
    assert "Authorization" not in request.headers
    with pytest.raises(AuthError, match="not HTTPS"):   # any other scheme stays refused
        _challenged(anonymous, "https://registry.example.com", "ftp://registry.example.com/t")
