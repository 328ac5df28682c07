"""Token auth (the Bearer flow of GitLab's container registry) against the real registry."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from promoter.adapters.oci import RegistryClient
from promoter.adapters.oci_auth import Credentials, credentials_from_auth_file
from promoter.errors import AuthError, ConfigError
from promoter.image.layers import bytes_blob
from tests.image.registry import running_registry
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
